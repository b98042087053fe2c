"""``python -m cnn_grader``: the instructor's command line (see :mod:`cnn_grader.cli`)."""

import sys

from .cli import main

sys.exit(main())
