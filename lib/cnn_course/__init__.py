"""Teaching helpers for the CNN course: data, models, training, plots and grading checks.

Every notebook of the course imports this package; the heavy lifting lives here so that
the notebooks can stay short, one idea per cell.
"""

import os as _os

# TensorFlow's C++ start-up chatter (oneDNN notices, CPU feature lists) says nothing a student needs.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
