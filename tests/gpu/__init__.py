"""Tests on a real NVIDIA GPU, run by `make gpu-test` (the main suite and CI leave this folder out)."""
