"""headroom: carry memory fixes for accelerate, transformers and peft as an upstream-style patch series."""

__version__ = "0.1.0"
