# `make run`: venv + install + Fashion-MNIST + the quickstart suite and its report.
# `make test`: the same set-up, then the test suite. `make check`: the quick tier (no Ray).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
PROFILE ?= reduced

.PHONY: run test check data postgres setup clean-state gpu-check gpu-speed reports

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "bench needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch is pinned to the 2.13.0 CPU wheel; see pyproject.toml. pip's own byte-compiling is serial; compileall
	# on both cores does it in about a minute. Not optional: where PYTHONDONTWRITEBYTECODE is set (it is on these
	# machines) Python never writes a .pyc itself, so every process compiled torch._dynamo, Lightning and MLflow
	# from source again: `import lightning.pytorch` 10 s instead of 4, and the time from `bench run` to the first
	# training step 46 s instead of 18 (python -m bench.perf.startup). Files that do not compile (py2 examples
	# inside some packages) are never imported; compileall's status for them is ignored.
	$(BIN)/pip install -q --no-compile -e '.[test,postgres]'
	-$(BIN)/python -m compileall -q -j 0 $(VENV)/lib >/dev/null 2>&1
	touch $(STAMP)

# The Debian package when apt is usable (root), else the official files with their MD5s into the cache.
data: $(STAMP)
	@if [ ! -f $(FMNIST) ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing dataset-fashion-mnist with apt"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) \
		  || echo "apt failed; bench will download the files instead"; \
	fi
	$(BIN)/bench data fetch fashion-mnist

# PostgreSQL for tests/test_server.py (a database the test starts itself, as the postgres user when root): Debian's
# package when apt is usable (root) and no PostgreSQL is installed; otherwise a message, and those tests skip.
postgres:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing postgresql with apt"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) \
		  || echo "apt failed: no PostgreSQL; the PostgreSQL tests will skip"; \
	else echo "no PostgreSQL and apt is not usable here (not root or no apt-get): the PostgreSQL tests will skip"; fi

run: data
	$(BIN)/bench run quickstart --profile $(PROFILE)
	$(BIN)/bench report quickstart --profile $(PROFILE)

# Two pytest processes at once: the slow tier (Ray runtimes and clusters, timed kills; one test after another, as
# before) and, beside it, the quick tier that `make check` runs, niced so that it takes the CPU time the slow tier
# leaves idle (38% of this 2-core machine over a serial run, sampled with vmstat) rather than slowing the slow tier.
# The quick tier's log is printed after the slow one's.
# --durations: where the time goes (`make test` must stay under 15 minutes on 2 cores).
test: data postgres
	@log=$$(mktemp); \
	nice -n 10 $(BIN)/python -m pytest -q -m "not slow" -p no:cacheprovider --durations=5 >$$log 2>&1 & quick=$$!; \
	$(BIN)/python -m pytest -q -m slow --durations=20; slow=$$?; \
	wait $$quick; quick=$$?; echo "---- the quick tier, run alongside (exit $$quick):"; cat $$log; rm -f $$log; \
	[ $$slow -eq 0 ] && [ $$quick -eq 0 ]

# The inner loop: unit and component tests (real Lightning, real MLflow stores), no Ray runtime; about 2 minutes.
check: data
	$(BIN)/python -m pytest -q -m "not slow" --durations=10

# Every suite's reduced profile, run here and reported into reports/SUITE (an estimated 4-5 h on 2 CPU cores; see the
# README). One store for all of them, so a re-run skips what finished; `make reports SUITES="quickstart insights"`
# does a subset. Each report's header gives its measured wall time, commit and device.
SUITES ?= quickstart degradation resnet_fig4 insights highway_depth resnet_cifar highway_fitnet preact densenet \
	resnext_cifar resnext_imagenet
REPORTS_STORE ?= sqlite:///$(CURDIR)/.bench/reports.db
# Suites whose reduced profile declares a sequential design (until_decided: max seeds, budget): seeds are added
# until each claim is decided, with the error rates of bench/report/sequential.py.
SEQUENTIAL ?= preact resnext_cifar resnext_imagenet highway_fitnet
reports: data
	mkdir -p .bench
	set -e; for s in $(SUITES); do \
		case " $(SEQUENTIAL) " in *" $$s "*) seq=--until-decided;; *) seq=;; esac; \
		$(BIN)/bench run $$s --profile reduced $$seq --tracking-uri $(REPORTS_STORE) --storage $(CURDIR)/.bench/reports-storage; \
		$(BIN)/bench report $$s --profile reduced --tracking-uri $(REPORTS_STORE) --out reports/$$s; \
	done

# Run state lives beside the checkout; this removes it (never the venv).
clean-state:
	rm -rf mlflow.db mlartifacts .bench

# On a GPU box with only torch + lightning (+ pydantic, pyyaml): no venv, no Ray, no MLflow. One command, under
# 8 minutes on one GPU (time limits per step: 300 + 75 + 100 s): harness (speed auto and off) against the project's
# bare loop for three nets (each net's result is written as soon as it is measured, so a cut-short run keeps the
# first ones), the packing curve of 1-4 ResNet-20 trials at once on the GPU, and the reference anchor loop on the
# same GPU in the same call when ../shared has it. Results: reports/perf/.
ANCHOR := ../shared/reference/gpu_anchor.py
gpu-speed:
	mkdir -p reports/perf
	-TORCHINDUCTOR_CACHE_DIR=$$HOME/.cache/bench/inductor PYTHONPATH=. timeout 300 python3 -m bench.perf.speed --device cuda \
		--models resnet20,resnet110,preresnet164_e --steps 150 --precision bf16-mixed --out reports/perf
	-PYTHONPATH=. timeout 75 python3 -m bench.perf.speed --device cuda --models resnet20 --steps 150 --variants eager \
		--precision bf16-mixed --packing 1,2,4 --out reports/perf
	-if [ -f $(ANCHOR) ]; then timeout 100 python3 $(ANCHOR) --model resnet110 --mode graphs --dtype bf16 --steps 200; \
	else echo "no $(ANCHOR): anchor loop not run"; fi

gpu-check: gpu-speed
