"""initbench: a benchmarking suite for neural-network weight initialization."""

from initbench.threads import quiet_openmp

# Before anything imports torch: OpenMP reads its wait policy once, when torch loads it.
quiet_openmp()

__version__ = "0.1.0"
