"""trace-build: TRACE-style complex instruction-following data, training and evaluation."""

__version__ = "0.1.0"
