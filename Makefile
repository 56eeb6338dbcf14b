# The README's two commands: `make demo` and `make test`. Both set up .venv on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.sauronnet-installed
# torch is pinned and installed first: 2.13.0 is the CPU wheel; anything unpinned pulls a multi-GB CUDA build.
TORCH_PIN := torch==2.13.0

.PHONY: demo test install clean-demo

install: $(STAMP)

$(STAMP): setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PIN)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

demo: $(STAMP)
	$(BIN)/sauron_demo

clean-demo:
	rm -rf sauron_data
