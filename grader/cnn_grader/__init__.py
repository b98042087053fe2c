"""The grader side of the CNN course: everything that knows an answer, and the commands that grade.

Students never install this package, and a grading kernel cannot import it.

* :mod:`cnn_grader.references`: the reference architectures hidden tests compare with.
* :mod:`cnn_grader.course`: the course folder (assignments, grade cells, releases, running nbgrader).
* :mod:`cnn_grader.sandbox`: the sandbox of a student's grading kernel.
* :mod:`cnn_grader.checker`: the trusted process where grade cells run.
* :mod:`cnn_grader.flags`: suspicious code in a submission, flagged for a person.
* :mod:`cnn_grader.grading`: autograding one submission: checker, limits, flags, grades as data.
* :mod:`cnn_grader.cluster`: grading a course on a Dask cluster (``make grade``).
* :mod:`cnn_grader.cli`: the instructor's command line, ``python -m cnn_grader``.
* :mod:`cnn_grader.testing`: the course's pytest plugin.
"""

__version__ = "0.1.0"
