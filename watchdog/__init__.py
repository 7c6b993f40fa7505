"""mlops-watchdog: golden prompts, latency, format checks and telemetry for self-hosted LLMs."""

__version__ = "0.1.0"

# The PyPI package `watchdog` (filesystem events) installs the same top-level name. This marker
# lets the CLI prove that the `watchdog` it imported is ours (see DESIGN.md, "About the name").
DISTRIBUTION = "mlops-watchdog"
