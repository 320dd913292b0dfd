"""rtanim: real-time facial re-expression from Action Units."""

import os

# numpy's threaded BLAS makes the many small matrix products of a frame pipeline far slower on
# busy cores, and the pipeline already runs its stages in parallel. Set before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
