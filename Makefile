# Two commands: `make run` (a working server with a demo room) and `make test`.
# While changing code: `make check` (under 30 s), `make fmt`, `make coverage` (CONTRIBUTING.md).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test check fmt coverage lint typecheck unit rules-check eval bench-filter bench \
	clean corpus model screenshots

$(STAMP): pyproject.toml requirements/encoder.txt
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --no-deps --require-hashes -r requirements/encoder.txt
	$(BIN)/pip install -q -e .
	touch $@

$(TEST_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# axe-core for the browser tests' accessibility checks (injected into pages by tests/e2e).
NPM := $(shell command -v npm 2>/dev/null)
node_modules/.installed: package.json
	npm install --no-audit --no-fund --silent
	touch $@

run: $(STAMP)
	$(BIN)/chatserver serve --demo

lint: $(TEST_STAMP)
	$(BIN)/ruff check chatserver tests bench

typecheck: $(TEST_STAMP)
	$(BIN)/mypy

rules-check: $(STAMP)
	$(BIN)/chatserver rules check

eval: $(STAMP)
	$(BIN)/chatserver rules eval tests/moderation/corpus.jsonl
	$(BIN)/python -m chatserver.moderation.corpus --split test > .venv/test-split.jsonl
	$(BIN)/chatserver rules eval .venv/test-split.jsonl

# Train the second stage's heads from corpus/ (fixed seed) into the committed artifact.
model: $(TEST_STAMP)
	$(BIN)/python -m chatserver.moderation.training

unit: $(TEST_STAMP) $(if $(NPM),node_modules/.installed)
	PYTHONASYNCIODEBUG=1 $(BIN)/pytest -q --durations=25

test: lint typecheck rules-check unit

# The fast loop: lint, types and the pure layers' tests (no sockets, no Redis, no
# PostgreSQL), without the few `slow` ones (corpus, retraining, rule compiles).
check: $(TEST_STAMP)
	$(BIN)/ruff check chatserver tests bench
	$(BIN)/mypy
	$(BIN)/pytest -q -m "not slow" tests/core tests/moderation

# Format the code and apply ruff's safe fixes.
fmt: $(TEST_STAMP)
	$(BIN)/ruff format chatserver tests bench
	$(BIN)/ruff check --fix chatserver tests bench

# Line coverage of chatserver/ (servers the tests start as subprocesses are not counted).
# TESTS=tests/core narrows the run.
TESTS ?= tests
coverage: $(TEST_STAMP) $(if $(NPM),node_modules/.installed)
	PYTHONASYNCIODEBUG=1 $(BIN)/pytest -q --cov=chatserver --cov-report=term-missing:skip-covered $(TESTS)

# The README's screenshots, from the browser tests (an ordinary test run never writes them).
screenshots: $(TEST_STAMP) $(if $(NPM),node_modules/.installed)
	SCREENSHOTS=1 $(BIN)/pytest -q tests/e2e

bench-filter: $(STAMP)
	$(BIN)/python bench/filter.py

bench: $(TEST_STAMP)
	$(BIN)/python bench/filter.py
	bash bench/run.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

corpus:
	$(BIN)/python -c "import json,pathlib; rows=[{'text':l,'label':f.stem} for f in sorted(pathlib.Path('tests/moderation/corpus').glob('*.txt')) for l in f.read_text().splitlines() if l.strip()]; pathlib.Path('tests/moderation/corpus.jsonl').write_text(''.join(json.dumps(r, ensure_ascii=False)+'\n' for r in rows))"
