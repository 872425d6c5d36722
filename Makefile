# Two commands set everything up on a machine with only Python and pip:
#   make demo   virtual environment + install + train the cipher model + decrypt
#   make test   virtual environment + install + lint + tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch is pinned here (it installs from a local wheel in seconds);
# pyproject.toml keeps an open range so that users may bring any torch >= 2.4.
TORCH_PIN ?= torch==2.13.0

.PHONY: demo test test-slow lint venv clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_PIN)
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

demo: venv
	$(BIN)/python -m rnnkit demo --out runs/cipher-demo

lint: venv
	$(BIN)/ruff check rnnkit tests bench examples
	$(BIN)/ruff format --check rnnkit tests bench examples

test: lint
	$(BIN)/python -m pytest -q -m "not slow"

# The slow tier (load and soak tests of the server, worst-case work budgets): run by .ci/run.
test-slow: venv
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf $(VENV) runs .pytest_cache
