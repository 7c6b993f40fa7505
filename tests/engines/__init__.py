"""Real LLM engines for the tests: vLLM (CPU build) and NVIDIA Triton (inside PyTriton)."""
