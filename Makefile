# The README's two commands: `make demo` and `make test`. Both set up .venv on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.sauronnet-installed
# torch is pinned and installed first: 2.13.0 is the CPU wheel; anything unpinned pulls a multi-GB CUDA build.
TORCH_PIN := torch==2.13.0

# nnU-Net v2, the peer of the benchmarks, lives in its own venv and never becomes a dependency of SauronNet.
BENCH_VENV ?= .bench-venv
BENCH_BIN := $(BENCH_VENV)/bin
BENCH_STAMP := $(BENCH_VENV)/.nnunet-installed

.PHONY: demo test reliability install clean-demo bench bench-quick bench-test bench-venv

install: $(STAMP)

$(STAMP): setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PIN)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

# the fault harness in full: kill -9 at 20 random moments of each of plan+preprocess, train, predict, import
# (make test kills each once); ~15 minutes on 2 cores
reliability: $(STAMP)
	SAURON_KILLS=20 $(BIN)/python -m pytest -q -s tests/reliability

demo: $(STAMP)
	$(BIN)/sauron_demo

clean-demo:
	rm -rf sauron_data

bench-venv: $(BENCH_STAMP)

# same torch pin first (a bare `pip install nnunetv2` pulls a CUDA torch); SauronNet too, for `make bench-test`
$(BENCH_STAMP): setup.py
	test -x $(BENCH_BIN)/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_BIN)/python -m pip install --quiet --upgrade pip
	$(BENCH_BIN)/python -m pip install --quiet $(TORCH_PIN)
	$(BENCH_BIN)/python -m pip install --quiet nnunetv2 $(TORCH_PIN)
	$(BENCH_BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

# the side-by-side test against nnU-Net itself (skipped by `make test`, where nnunetv2 is not installed)
bench-test: $(BENCH_STAMP)
	$(BENCH_BIN)/python -m pytest -q -s tests/e2e/test_nnunet_peer.py

# every peer benchmark, one after the other, into benchmarks/results/latest.md and README.md (about 6 hours; README)
bench: $(STAMP) bench-test
	$(BIN)/python benchmarks/run_all.py

bench-quick: $(STAMP) $(BENCH_STAMP)
	$(BIN)/python benchmarks/run_all.py --quick --no-readme
