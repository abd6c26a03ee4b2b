"""Evaluation with TRACE's protocol: load items, generate, judge per constraint, IF-S / IF-M with CIs, reports."""
