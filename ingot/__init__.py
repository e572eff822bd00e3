"""ingot: a compiler-first model server."""

__version__ = "0.1.0"
