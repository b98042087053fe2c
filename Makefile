# The course bundle's commands. `make demo` and `make test` are the two a new machine needs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Pinned versions for Python 3.11 (what CI runs); other Pythons resolve from pyproject.toml's ranges.
CONSTRAINTS ?= $(shell $(PYTHON) -c 'import sys; print("constraints.txt" if sys.version_info[:2] == (3, 11) else "")')
INSTALLED := $(VENV)/.installed
JOBS ?= 1

.PHONY: help setup test test-fast demo release grade bench fidelity clean

help:
	@echo "make setup     create .venv/ and install everything (idempotent; as root also Debian's dataset-fashion-mnist)"
	@echo "make demo      release the assignments from source/ and show what students get"
	@echo "make test      run the whole test suite (notebooks in smoke mode)"
	@echo "make release   regenerate release/ from source/ with nbgrader generate_assignment"
	@echo "make grade     autograde submissions (the grading workflow)"
	@echo "make bench     benchmarks"

setup: $(INSTALLED)

$(INSTALLED): pyproject.toml constraints.txt
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then \
	  echo "Installing Debian's dataset-fashion-mnist (the official Fashion-MNIST files)"; \
	  (apt-get install -y -q dataset-fashion-mnist || (apt-get update -q && apt-get install -y -q dataset-fashion-mnist)) \
	    || echo "warning: dataset-fashion-mnist not installed; Fashion-MNIST will come from the Keras cache or download"; \
	fi
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e '.[dev]'
	touch $@

test: setup
	$(BIN)/python -m pytest

demo: release
	@$(BIN)/python -m cnn_course.course summary

release: setup
	$(BIN)/python -m cnn_course.course release

grade: setup
	$(BIN)/python -m cnn_course.course grade --jobs $(JOBS) $(if $(ZIP),--zip $(ZIP)) $(if $(ASSIGNMENT),--assignment $(ASSIGNMENT))

bench: setup
	@echo "Benchmarks arrive with the benchmarks issue (#7)."; exit 2

clean:
	rm -rf $(VENV) .pytest_cache
