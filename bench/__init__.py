"""Benchmarks: figures measured side by side in one run, with ratios against a baseline
measured in the same run. Run them all with ``make bench`` (``python -m bench``); each
module also runs alone (``python -m bench.generator``). Not part of ``make test``."""
