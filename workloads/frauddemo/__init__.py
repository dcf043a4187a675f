"""FraudDemo: cross-store return-fraud detection on open-source active-active Redis."""

import os

__version__ = "0.1.0"

# Numeric libraries run on one thread in every FraudDemo process: the face model projects one vector at
# a time (~30 times per verification), where a BLAS thread per core only spins against the photo
# workers, the stores and the tills. Measured on 2 busy cores: one verification took 110-250 ms of CPU
# with the default threads, ~30 ms with one. A library reads these when it loads, so they are set when
# the package is imported, before anything in it loads numpy; an operator's own setting is kept.
SINGLE_THREAD_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def single_threaded_numerics() -> None:
    for var in SINGLE_THREAD_ENV:
        os.environ.setdefault(var, "1")


single_threaded_numerics()
