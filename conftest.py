"""pytest at the repository root: the course's plugin applies to tests/ and to the notebooks in source/.

``make test TEST_WORKERS=N`` (``pytest -n N``) runs the suite on N pytest-xdist workers. Each file runs
whole on one worker: a notebook's cells in order in one kernel, and a module's fixtures built once. Files that
share a session fixture form one unit (:data:`SAME_WORKER`), and the slowest units start first
(:data:`SLOWEST_FIRST`), so that no long file is left to run alone at the end.
"""

import pytest

pytest_plugins = ["cnn_grader.testing"]

#: Test files that share an expensive session fixture: each group runs on one worker.
SAME_WORKER = {
    "tests/test_hub.py": "the course server",  # course_server and hub_cycle_report
    "tests/test_hub_browser.py": "the course server",
}

#: Units that take minutes, slowest first (``make bench-tests`` lists the slowest tests); the others
#: follow, those with the most tests first.
SLOWEST_FIRST = (
    "tests/test_cluster.py",
    "the course server",
    "tests/test_grading.py",
    "tests/test_tampering.py",
    "tests/test_cnn_design.py",
    "tests/test_cnn_mnist.py",
    "tests/test_cnn_cifar10.py",
)


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, which may not be installed
def pytest_xdist_make_scheduler(config, log):
    """One work unit per test file (or :data:`SAME_WORKER` group), the slowest units first."""
    from xdist.scheduler import LoadScopeScheduling

    class ByFileScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return SAME_WORKER.get(path, path)

        def _assign_work_unit(self, node) -> None:
            rank = {scope: index for index, scope in enumerate(SLOWEST_FIRST)}
            order = sorted(self.workqueue, key=lambda scope: (rank.get(scope, len(rank)), -len(self.workqueue[scope])))
            for scope in order:
                self.workqueue.move_to_end(scope)
            super()._assign_work_unit(node)

    return ByFileScheduling(config, log)
