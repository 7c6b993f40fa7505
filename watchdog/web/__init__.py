"""The listener: /metrics, /healthz, /readyz and the status page, with its TLS and basic auth."""
