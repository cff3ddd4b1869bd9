# Set-up and everyday targets. Each target creates the virtual environment it needs, so on a fresh
# machine with Python 3.10+ `make demo` and `make test` are all there is to type.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= actiontk-demo
DEMO_ARGS ?=

.PHONY: demo test lint clean-venv

# Both pipelines on the embedded toy data (`make demo DEMO_ARGS=--fast` for the short one).
demo: $(STAMP)
	$(BIN)/actiontk demo --workdir $(DEMO_DIR) $(DEMO_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check actiontk tests bench

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; v = sys.version_info; sys.exit(0 if v >= (3, 10) else "actiontk needs Python 3.10 or newer, found %d.%d: run make PYTHON=python3.X" % v[:2])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

clean-venv:
	rm -rf $(VENV)
