# make test   - create .venv, install torch + alignlab[test] (the lab extra, pytest, transformers),
#               run the test suite
# make demo   - same venv with torch + alignlab[lab]; fetch Fashion-MNIST via apt when possible; run the
#               main job: alignlab compare on Fashion-MNIST, MLP and LeNet-5 under six rules, then a report
# make experiments - same venv (alignlab[lab]) and data; the four paper experiments (experiments/README.md)
#
# `pip install alignlab` needs torch and numpy only; the lab (CLI, runs, reports) is the `lab` extra.
#
# TORCH pins the torch requirement installed before alignlab, so that pip does
# not pick a large default build; override it, e.g. make test TORCH=torch.

PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
LAB_STAMP := $(VENV)/.installed-lab
TEST_STAMP := $(VENV)/.installed-test
FASHION_MNIST_DIR := /usr/share/datasets/fashion-mnist

.PHONY: test demo experiments data clean

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q

demo: $(LAB_STAMP) data
	$(BIN)/alignlab compare configs/fashion-mnist.yaml --models mlp,lenet --rules bp,fa,dfa,usf,frsf,kp --name main

experiments: $(LAB_STAMP) data
	for e in rank_collapse pfa_vs_rest representations feedback_dimension; do \
		$(BIN)/python experiments/$$e.py || exit 1; \
	done

# Install the Debian dataset package when it is missing and we are allowed to.
data:
	@if [ ! -d "$(FASHION_MNIST_DIR)" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing dataset-fashion-mnist with apt-get"; \
		{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y dataset-fashion-mnist; } \
			|| echo "warning: could not install dataset-fashion-mnist" >&2; \
	fi

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Redone whenever pyproject.toml changes (or a stamp is deleted); the test extra adds pytest
# and transformers to the lab extra.
$(LAB_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install "$(TORCH)"
	$(BIN)/python -m pip install -e '.[lab]'
	touch $@

$(TEST_STAMP): $(LAB_STAMP)
	$(BIN)/python -m pip install -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV)
