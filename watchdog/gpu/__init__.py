"""GPU telemetry: NVML, the periodic sample and its rows, and the detectors that read them."""
