"""What the daemon stands on: clocks, the scheduler, systemd, and the log."""
