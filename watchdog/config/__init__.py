"""The config file: loaded once, strictly, from every concern's settings section, and its schema."""
