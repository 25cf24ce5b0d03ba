# make test   - create .venv, install torch + alignlab[test], run the test suite
# make demo   - same venv; fetch Fashion-MNIST via apt when possible; run the main job:
#               alignlab compare on Fashion-MNIST, MLP and LeNet-5 under six rules, then a report
# make experiments - same venv and data; the four paper experiments (experiments/README.md)
#
# TORCH pins the torch requirement installed before alignlab, so that pip does
# not pick a large default build; override it, e.g. make test TORCH=torch.

PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FASHION_MNIST_DIR := /usr/share/datasets/fashion-mnist

.PHONY: test demo experiments data clean

test: $(STAMP)
	$(BIN)/python -m pytest -q

demo: $(STAMP) data
	$(BIN)/alignlab compare configs/fashion-mnist.yaml --models mlp,lenet --rules bp,fa,dfa,usf,frsf,kp --name main

experiments: $(STAMP) data
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

# Redone whenever pyproject.toml changes (or the stamp is deleted).
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install "$(TORCH)"
	$(BIN)/python -m pip install -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV)
