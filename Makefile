# aerun: the everyday commands. `make install` once, then `make train` / `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA_ROOT ?= ../shared/datasets
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install train smoke test test-all bench gallery clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(BIN)/python  ## venv + torch + aerun (editable) with the dev extras
	$(BIN)/python -m pip install -q $(TORCH_PINS)
	$(BIN)/python -m pip install -q -e '.[dev,optuna,parallel,slurm]'
	@echo "installed: $(BIN)/aerun (activate with: source $(BIN)/activate)"

train:  ## the main job: the conv AE on MNIST
	$(BIN)/aerun train model=cnn_ae data.root=$(DATA_ROOT)

smoke:  ## a tiny run, seconds on CPU
	$(BIN)/aerun train debug=smoke data.root=$(DATA_ROOT)

test:  ## the fast suite, 2 processes (builds its own tiny datasets; nothing downloads)
	$(BIN)/python -m pytest -q -n 2 -m "not slow"

test-all:  ## every test, the slow ones too (DDP, launchers, the full option walk, kill -9)
	$(BIN)/python -m pytest -q -n 2 -m "slow or not slow"

bench:  ## throughput benchmark: prints ratios, writes benchmarks/results.md
	$(BIN)/python benchmarks/train_throughput.py --root $(DATA_ROOT)

gallery:  ## every experiment config on real data: docs/gallery.md and docs/figures/gallery_*.png
	$(BIN)/python docs/gallery.py --data-root $(DATA_ROOT) --threads 1

clean:
	rm -rf outputs .pytest_cache
