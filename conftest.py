"""pytest at the repository root: the course's plugin applies to tests/ and to the notebooks in source/."""

pytest_plugins = ["cnn_grader.testing"]
