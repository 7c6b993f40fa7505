"""Alerting: a state machine per (endpoint, kind), a durable outbox, and notifiers."""
