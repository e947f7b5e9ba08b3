# The two commands a newcomer runs: `make serve` and `make test`. Each sets itself up.
# `make demo` writes the files the README's tour uses (cat.jpg, clothes.zip, suite.zip) here.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test demo bench-step install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/pip || $(PYTHON) -m venv --clear $(VENV)  # an install cut short is redone
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(BIN)/zscl serve

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/zscl demo

bench-step: $(STAMP)
	$(BIN)/python -m benchmarks.step_cost

clean:
	rm -rf $(VENV) var .pytest_cache
