"""The development stack: a throwaway Kafka-compatible broker (Tansu), an
embedded Valkey, the live demo and its patrol simulator. The engine itself
never imports this package; the demo, the tests and the benchmarks do.
"""
