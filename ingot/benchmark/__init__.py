"""Measuring ingot, or any OpenAI-compatible server, with vLLM's benchmark definitions (run by `ingot bench`)."""
