# `make run`: venv + install + Fashion-MNIST + the quickstart suite and its report.
# `make test`: the same set-up, then the test suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
PROFILE ?= reduced

.PHONY: run test data setup clean-state gpu-check

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "bench needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch is pinned to the 2.13.0 CPU wheel; see pyproject.toml.
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

# The Debian package when apt is usable (root), else the official files with their MD5s into the cache.
data: $(STAMP)
	@if [ ! -f $(FMNIST) ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing dataset-fashion-mnist with apt"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) \
		  || echo "apt failed; bench will download the files instead"; \
	fi
	$(BIN)/bench data fetch fashion-mnist

run: data
	$(BIN)/bench run quickstart --profile $(PROFILE)
	$(BIN)/bench report quickstart --profile $(PROFILE) --dataset fashion-mnist

test: data
	$(BIN)/python -m pytest -q

# Run state lives beside the checkout; this removes it (never the venv).
clean-state:
	rm -rf mlflow.db mlartifacts .bench

# On a GPU box with only torch + lightning (+ pydantic, pyyaml): no venv, no Ray, no MLflow. Harness against the
# bare loop in the same process, and the loader alone; compare with shared/reference/gpu_anchor.py on the same GPU.
gpu-check:
	PYTHONPATH=. python3 -m bench.train.bench_step --model resnet20 --n 50000 --device cuda
	PYTHONPATH=. python3 -m bench.train.bench_step --model resnet110 --n 50000 --device cuda
	PYTHONPATH=. python3 -m bench.data.bench_loader --device cuda
