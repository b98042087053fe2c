"""``python -m cnn_grader``: the instructor's command line (see :mod:`cnn_grader.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
