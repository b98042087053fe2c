# The course bundle's commands. `make demo` and `make test` are the two a new machine needs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Pinned versions for Python 3.11 (what CI runs); other Pythons resolve from pyproject.toml's ranges.
CONSTRAINTS ?= $(shell $(PYTHON) -c 'import sys; print("constraints.txt" if sys.version_info[:2] == (3, 11) else "")')
INSTALLED := $(VENV)/.installed
JOBS ?=
SCHEDULER ?=
SCHEDULER_FILE ?=
DEBIAN_PACKAGES := dataset-fashion-mnist bubblewrap chromium chromium-driver
# The course server's students run from their own environment: the student package, nbgrader and
# JupyterLab, never the grader package (deploy/jupyterhub_config.py).
STUDENT_VENV := .venv-student
STUDENT_INSTALLED := $(STUDENT_VENV)/.installed
PROXY_INSTALLED := deploy/node_modules/.installed
STUDENT_HIDDEN_PLUGINS := @jupyter/nbgrader:formgrader @jupyter/nbgrader:create-assignment @jupyter/nbgrader:course-list \
  @jupyterlab/apputils-extension:announcements
PORT ?= 8000
# jsonschema's optional IRI format checker, which jupyter-events pulls in: rfc3987-syntax 1.1.0 builds its
# grammar when imported, 2.6 s of every nbgrader command and Jupyter server start (`python -X importtime -c
# "import nbgrader.apps"`: 5.2 s with it, 2.2 s without). Nothing here validates IRIs; jsonschema skips
# the format when the package is absent (python-jsonschema/jsonschema#1392).
SLOW_OPTIONAL_PACKAGES := rfc3987-syntax
# pytest-xdist workers of make test; 1 runs pytest alone. The slow tests already keep two cores busy
# (Dask grading on two workers, TensorFlow's thread pools): on 2 cores, tests/test_cluster.py took
# 697 s alone and about 1,980 s beside a second worker. On a bigger machine, try one per 2-4 cores.
TEST_WORKERS ?= 1

.PHONY: help setup test test-fast demo release grade hub hub-cycle bench bench-tests fidelity clean

help:
	@echo "make setup     create .venv/ and .venv-student/, install everything (idempotent; as root also Debian packages)"
	@echo "make demo      grade the example submissions (examples/) and show the grades and feedback"
	@echo "make test      run the whole test suite (notebooks in smoke mode)"
	@echo "make release   regenerate release/ from source/ with nbgrader generate_assignment"
	@echo "make grade     autograde submitted/<student>/<assignment>/ on Dask (JOBS=N local workers, or"
	@echo "               SCHEDULER=tcp://host:8786 or SCHEDULER_FILE=file; ZIP=lms.zip ASSIGNMENT=name)"
	@echo "make hub       run the course server (JupyterHub + nbgrader exchange) on 127.0.0.1:$(PORT) until Ctrl-C; a local trial"
	@echo "make hub-cycle release, fetch, validate, submit, autograde, grade and return feedback through a fresh hub"
	@echo "make bench     training throughput, time to accuracy, grading on Dask, where grading's seconds go (about 63 min on 2 cores, 40 of them grading 8 submissions per assignment three ways; one part: BENCHES=grading_breakdown)"
	@echo "make bench-tests  time the test suite and its notebook parts (about 45 min)"
	@echo "make fidelity  run every solution notebook in full mode (long) and check it against the published figures: docs/fidelity.md"

setup: $(INSTALLED) $(STUDENT_INSTALLED) $(PROXY_INSTALLED)

$(INSTALLED): pyproject.toml grader/pyproject.toml constraints.txt
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    ! dpkg -s $(DEBIAN_PACKAGES) >/dev/null 2>&1; then \
	  echo "Installing Debian's dataset-fashion-mnist (the official Fashion-MNIST files) and bubblewrap (grading sandbox)"; \
	  (apt-get install -y -q $(DEBIAN_PACKAGES) || (apt-get update -q && apt-get install -y -q $(DEBIAN_PACKAGES))) \
	    || echo "warning: $(DEBIAN_PACKAGES) not installed; see README"; \
	fi
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e . -e './grader[dev]'
	$(BIN)/python -m pip uninstall -q -y $(SLOW_OPTIONAL_PACKAGES)
	touch $@

$(STUDENT_INSTALLED): pyproject.toml constraints.txt
	test -x $(STUDENT_VENV)/bin/python || $(PYTHON) -m venv $(STUDENT_VENV)
	$(STUDENT_VENV)/bin/python -m pip install -q --upgrade pip
	$(STUDENT_VENV)/bin/python -m pip install -q $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e . 'jupyterhub>=5,<6'
	$(STUDENT_VENV)/bin/python -m pip uninstall -q -y $(SLOW_OPTIONAL_PACKAGES)
	@# Students see the assignment list and Validate, not the instructor's formgrader, course list or
	@# create-assignment tools; and no news pop-up, which would reach for the internet.
	$(STUDENT_VENV)/bin/jupyter labextension disable --level=sys_prefix $(STUDENT_HIDDEN_PLUGINS) >/dev/null 2>&1
	$(STUDENT_VENV)/bin/jupyter labextension lock --level=sys_prefix $(STUDENT_HIDDEN_PLUGINS) >/dev/null 2>&1
	$(STUDENT_VENV)/bin/jupyter server extension disable --sys-prefix nbgrader.server_extensions.formgrader nbgrader.server_extensions.course_list >/dev/null
	touch $@

$(PROXY_INSTALLED): deploy/package.json deploy/package-lock.json
	@if command -v npm >/dev/null; then cd deploy && npm ci --no-audit --no-fund --loglevel=error && touch ../$@; \
	else echo "warning: npm not found: the course server (make hub) needs Node.js 20 and npm; see README"; fi

test: setup
	$(BIN)/python -m pytest $(if $(filter-out 1,$(TEST_WORKERS)),-n $(TEST_WORKERS))

demo: setup
	$(BIN)/python -m cnn_grader demo --jobs 2

hub: setup
	$(BIN)/python -m cnn_grader hub --port $(PORT)

hub-cycle: setup
	$(BIN)/python -m cnn_grader hub-cycle

release: setup
	$(BIN)/python -m cnn_grader release

grade: setup
	$(BIN)/python -m cnn_grader grade $(if $(JOBS),--jobs $(JOBS)) $(if $(SCHEDULER),--scheduler $(SCHEDULER)) \
	  $(if $(SCHEDULER_FILE),--scheduler-file $(SCHEDULER_FILE)) $(if $(ZIP),--zip $(ZIP)) \
	  $(if $(ASSIGNMENT),--assignment $(ASSIGNMENT))

# Each writes bench/results/<name>.json and regenerates docs/benchmarks.md.
BENCHES ?= throughput time_to_accuracy grading grading_breakdown
bench: setup
	cd bench && for name in $(BENCHES); do ../$(BIN)/python $$name.py || exit 1; done

bench-tests: setup
	cd bench && ../$(BIN)/python test_suite.py

fidelity: setup
	$(BIN)/python bench/fidelity.py --run --write

clean:
	rm -rf $(VENV) $(STUDENT_VENV) deploy/node_modules .pytest_cache
