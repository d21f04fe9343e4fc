"""initbench: a benchmarking suite for neural-network weight initialization."""

__version__ = "0.1.0"
