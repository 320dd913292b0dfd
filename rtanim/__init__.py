"""rtanim: real-time facial re-expression from Action Units."""

__version__ = "0.1.0"
