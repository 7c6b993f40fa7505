"""Drift: baselines, the comparison of recent runs with them, change events and cold starts."""
