"""Measurements: probes, the write ledger, histograms, phases, reconnects, the timeline.

Everything here but the probes is pure: it turns samples into the metrics that
docs/measurements.md defines, so each definition is tested on its own.
"""
