# Two commands do all the set-up: `make demo` and `make test`.
# Both create .venv with the project and its pinned dependencies on first use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo stack test lint exports lock clean prerequisites

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip --constraint constraints.txt
	$(BIN)/python -m pip install --quiet --constraint constraints.txt -e '.[dev,embedded,evaluate]'
	touch $(STAMP)

## Run the engine on the embedded broker and store with synthetic traffic (Ctrl-C stops).
## Pass options with ARGS, e.g. make demo ARGS="--events 5000 --json".
demo: $(STAMP)
	$(BIN)/relevanz demo $(ARGS)

## The demo on Apache Kafka and Apache Cassandra (from Maven Central) instead of the
## embedded broker and store; e.g. make stack ARGS="--events 5000 --json".
stack: prerequisites $(STAMP)
	$(BIN)/relevanz demo --stack kafka-cassandra $(ARGS)

## Lint, type-check, check the exported schemas and run the whole test suite
## (it starts Apache Kafka and Apache Cassandra once each, from Maven Central).
test: prerequisites $(STAMP) lint
	$(BIN)/python -m pytest $(ARGS)

## The tests run real Kafka and Cassandra servers: without Java 17 and Maven, stop at once.
prerequisites:
	@command -v java >/dev/null && command -v mvn >/dev/null \
	  && java -version 2>&1 | grep -Eq 'version "(1[7-9]|[2-9][0-9])' \
	  || { echo "make test needs Java 17 (or later) and Maven on PATH: install them," \
	       "e.g. apt-get install openjdk-17-jdk-headless maven" >&2; exit 2; }

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m schemas.export --check

## Regenerate schemas/exported/ after changing a record.
exports: $(STAMP)
	$(BIN)/python -m schemas.export

## Refresh constraints.txt after changing a dependency: resolve pyproject.toml afresh.
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet --upgrade pip
	.venv-lock/bin/python -m pip install --quiet -e '.[dev,embedded,evaluate]'
	{ echo "# Every package at its exact version (make lock writes it; do not edit)."; \
	  .venv-lock/bin/python -m pip freeze --all --exclude-editable; } > constraints.txt
	rm -rf .venv-lock

clean:
	rm -rf $(VENV) relevanz-demo .pytest_cache .mypy_cache .ruff_cache
