"""OpenTelemetry export, optional: the GenAI client metrics and hw.gpu.* pushed over OTLP/HTTP."""
