# Two commands do all set-up on a fresh machine:
#   make demo   install, then `privmed demo`: built-in data -> small study -> demo/report.html
#   make test   install, then run the test suite (what .ci/run calls): 14-15 minutes on 2 cores (917 tests)
#   make test-fast  the tests not marked slow (no real training runs or studies): 5 minutes on 2 cores
#   make test-backbones  timm/torchvision backbones and LoRA (tests marked backbones) in ./.venv-backbones, which
#                 holds torch==2.14.1 + torchvision==0.29.1 (PyPI's torchvision does not import beside 2.13.0):
#                 ~3 min to install once, docs/backbones.md
#   make browser  headless Chromium for the report's browser checks (Debian/Ubuntu, as root; CI runs it)
# Installs into ./.venv. TORCH is the CPU wheel these machines carry on disk; with a GPU,
# bring your own build:  make demo TORCH=torch   (or any CUDA wheel spec)

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN     = $(VENV)/bin
BACKBONES_VENV  ?= .venv-backbones
BACKBONES_TORCH ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test test-fast test-backbones browser clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

demo: install
	$(BIN)/privmed demo --out demo

test: install
	$(BIN)/python -m pytest -q -rs

test-fast: install
	$(BIN)/python -m pytest -q -rs -m "not slow"

$(BACKBONES_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(BACKBONES_VENV)
	$(BACKBONES_VENV)/bin/pip install -q --upgrade pip
	$(BACKBONES_VENV)/bin/pip install -q $(BACKBONES_TORCH)
	$(BACKBONES_VENV)/bin/pip install -q -e ".[dev,backbones]"
	touch $@

test-backbones: $(BACKBONES_VENV)/.installed
	$(BACKBONES_VENV)/bin/python -m pytest -q -rs -m backbones tests/test_backbones.py

browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null \
	  || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; }

clean:
	rm -rf $(VENV) $(BACKBONES_VENV) runs demo
