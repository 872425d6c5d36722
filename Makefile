# Two commands set everything up on a machine with only Python and pip:
#   make demo   virtual environment + install + train the cipher model + decrypt
#   make test   virtual environment + install + lint + tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch is pinned here (it installs from a local wheel in seconds);
# pyproject.toml keeps an open range so that users may bring any torch >= 2.4.
TORCH_PIN ?= torch==2.13.0

.PHONY: demo test lint venv clean

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
	$(BIN)/mypy  # the modules listed in pyproject.toml's [tool.mypy]

# Tests marked slow (over ~10 s each) are left out here; CI runs them: make test SLOW=1
test: lint
	$(BIN)/python -m pytest -q $(if $(SLOW),,-m "not slow")

clean:
	rm -rf $(VENV) runs .pytest_cache
