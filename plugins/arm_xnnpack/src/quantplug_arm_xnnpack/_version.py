"""Plugin version: embedded into the compiled kernels and checked at import."""

__version__ = "0.3.0"
