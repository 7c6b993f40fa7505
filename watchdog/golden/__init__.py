"""Golden sets: the prompts, their format checks, and the body template of `api: http`."""
