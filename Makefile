# The two commands of the README. Both do the whole set-up first (idempotent, quick the 2nd time).
.PHONY: setup demo test lint bench

setup:
	@scripts/setup.sh

demo: setup
	.venv/bin/interest-stream demo

test: setup
	.venv/bin/python -m pytest

lint: setup
	.venv/bin/ruff check streams encoders interest_state tests
	.venv/bin/mypy
