# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DATA := reports/demo-data/digits
DEMO_ARGS ?= --time-budget 13m --top-k 2

.PHONY: install zoo demo test parity clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[zoo,text,test]"
	touch $@

install: $(BIN)/.installed

zoo: install
	$(BIN)/autotransfer zoo build

demo: zoo
	rm -rf $(DEMO_DATA)
	$(BIN)/python examples/write_digits.py $(DEMO_DATA) --per-class 60
	$(BIN)/autotransfer run $(DEMO_DATA) --search-space offline --name digits-demo --overwrite $(DEMO_ARGS)

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) reports/*/

# Parity of the converted zoo with the PyTorch reference (benchmark-only deps, kept out of .venv).
TORCHLIB := .cache/torchlib
parity: zoo
	test -d $(TORCHLIB)/torch || $(BIN)/pip install -q --target $(TORCHLIB) torch==2.13.0 efficientnet-lite-pytorch
	PYTHONPATH=$(TORCHLIB) $(BIN)/python benchmarks/zoo_parity.py
