"""Offline data-set tooling: the synthetic generator and its oracle, converters of public logs,
the validator and the statistics report. Each has a CLI (``python -m longseq.datasets.<tool>``).

This package sits above `longseq.data` (the runtime input pipeline and the Parquet format):
it writes and checks data sets; training and evaluation never import it.
"""
