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
	rm -rf $(RUNS)/sample $(RUNS)/export
	$(BIN)/rn50 train $(SAMPLE) --recipe sample-cpu --out $(RUNS)/sample
	$(BIN)/rn50 export $(RUNS)/sample/checkpoints/best.pth --format onnx --image-size 32 --images $(SAMPLE)/val \
		--out $(RUNS)/export/rn50-sample.onnx
	$(BIN)/rn50 bench infer $(RUNS)/sample/checkpoints/best.pth --batch 1..8 --backend eager,onnxruntime \
		--precision fp32 --device cpu --image-size 32 --iters 10 --out $(RUNS)/bench-infer
	$(BIN)/rn50 bench data $(SAMPLE) --device cpu --iters 10 --image-size 32

test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(SAMPLE) .pytest_cache
