"""nbgrader settings of the course: folders, the solution stub, and the limits on each grading kernel.

Run nbgrader from the repository root (the Makefile does), so that this file is found.
"""

from pathlib import Path

c = get_config()  # noqa: F821  (nbgrader provides get_config)

COURSE_ROOT = Path(__file__).resolve().parent

c.CourseDirectory.course_id = "cnn_course"
c.CourseDirectory.root = str(COURSE_ROOT)
c.CourseDirectory.source_directory = "source"
c.CourseDirectory.release_directory = "release"
c.CourseDirectory.submitted_directory = "submitted"
c.CourseDirectory.autograded_directory = "autograded"
c.CourseDirectory.feedback_directory = "feedback"
c.CourseDirectory.db_url = f"sqlite:///{COURSE_ROOT / 'gradebook.db'}"
# Files never copied, neither into a release nor from a submission into autograded/. Saved models
# (*.keras) are copied from submissions, where hidden tests evaluate them; `make release` leaves
# out the ones a solution run wrote into source/ (cnn_grader.course.RELEASE_IGNORE).
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback"]
# autograde copies the other files of source/<assignment>/ over each submission; models that a
# solution run saved there must never replace the student's own (hidden tests evaluate those).
c.Autograde.exclude_overwriting = {
    folder.name: sorted(str(path.relative_to(folder)) for pattern in ("*.keras", "*.h5") for path in folder.rglob(pattern))
    for folder in (COURSE_ROOT / "source").glob("*") if folder.is_dir()
}

# What a student finds where the solution was: the marker of the seed exercises, then a line that
# fails clearly, so that a blank answer scores 0 with an error that says what to do.
c.ClearSolutions.code_stub = {
    "python": (
        "# here is your code coming\n"
        'raise NotImplementedError("This cell is yours to write: replace this line with your code.")'
    ),
}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# Grading kernels: one cell may run for at most this many seconds; a cell that takes longer
# is interrupted and its grade cell scores 0 (the answer's error is shown in the feedback).
c.Execute.timeout = 120
c.Execute.interrupt_on_timeout = True

# Autograding runs student code, which is untrusted: cnn_grader's CheckedExecute replaces nbgrader's
# Execute. Grade cells run in a checker kernel that never runs student code; the student's kernel runs
# with limits and, where bubblewrap works, sees only its own submission (see cnn_grader.grading).
# `make grade` can override the limits.
c.CheckedExecute.memory_limit_mb = 6144  # address-space limit of each grading kernel
c.CheckedExecute.notebook_time_limit = 600  # wall-clock seconds per notebook
c.CheckedExecute.isolate = True  # the bubblewrap sandbox, where it works
c.LimitOutput.max_lines = 1000
try:
    from nbconvert.preprocessors import ClearMetadataPreprocessor
    from nbgrader.preprocessors import (AssignLatePenalties, CheckCellMetadata, IgnorePattern, LimitOutput,
                                        SaveAutoGrades)

    from cnn_grader.grading import CheckedExecute

    c.Autograde.autograde_preprocessors = [CheckedExecute, IgnorePattern, ClearMetadataPreprocessor, LimitOutput,
                                           SaveAutoGrades, AssignLatePenalties, CheckCellMetadata]
except ImportError:  # a student's machine has no grader package: validate still works
    pass

# LMS downloads (`make grade ZIP=...`): files named <student id>_<notebook>.ipynb.
c.FileNameCollectorPlugin.named_regexp = r".*/(?P<student_id>[A-Za-z0-9.\-]+)_(?P<file_id>[^/]+\.ipynb)$"
