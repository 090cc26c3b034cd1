"""Outputs of a run, rendered from result.json alone: the file itself and the console table."""
