"""The OpenAI-compatible HTTP server: FastAPI routes over one or more engines."""
