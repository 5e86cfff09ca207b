"""The engine's long-running and bulk services: the live worker, the
backfill of historical files, the replay to Kafka and the terminal live view.
They compose adapters over the core; the API and the commands use them."""
