# Two entry points for a fresh machine with only Python: `make demo` (main job on the built-in sample) and `make test`.
PYTHON ?= python3
VENV ?= .venv
# torch 2.14.1 / torchvision 0.29.1 are what CI uses; the package also runs on torch 2.11 / torchvision 0.26.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
EXTRAS ?= dev
BIN := $(VENV)/bin
SAMPLE ?= sample
RUNS ?= runs

.PHONY: install demo test lint clean

$(BIN)/rn50: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e '.[$(EXTRAS)]'
	touch $@

install: $(BIN)/rn50

demo: install
	$(BIN)/rn50 data sample $(SAMPLE) --force
	$(BIN)/rn50 data check $(SAMPLE)
	$(BIN)/rn50 recipes sample-cpu
	$(BIN)/rn50 demo --sample $(SAMPLE) --out $(RUNS)/demo --force

test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q --durations=20

clean:
	rm -rf $(VENV) $(SAMPLE) .pytest_cache
