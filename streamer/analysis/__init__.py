"""Analyses over historical files: the ranking backtest (``evaluate``), the
alert harness (``evaluate-alerts``), an operation's effect (``assess``), the
feedback check and the dosage report. The maths is in :mod:`streamer.core`."""
