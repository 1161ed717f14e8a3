# headroom: every target is a thin call to one `headroom` subcommand.
#   make apply build test    the main job: checkouts, wheels + index, proof + upstream suites
#   make check               the project's own tests, then the main job
# Options: V=1 (show everything), FORCE=1 (apply over unsaved work, saved to a bundle first),
#          ONLY=name (one upstream), UPSTREAM=default|full|none (upstream suite selection).

PYTHON  ?= python3
VENV    ?= .venv
UPSTREAM ?= default
HEADROOM = $(VENV)/bin/headroom $(if $(filter-out 0,$(V)),-v) $(foreach n,$(ONLY),--only $(n))
TOOL_STAMP = $(VENV)/.installed

.PHONY: all apply export check-export fetch build index test check unit clean distclean help

all: apply build

help:
	@sed -n '1,7p' Makefile

$(TOOL_STAMP): requirements/tools.txt pyproject.toml
	@echo "[setup] tool environment $(VENV)"
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@$(VENV)/bin/python -m pip install -q --disable-pip-version-check -r requirements/tools.txt
	@$(VENV)/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e . 2>/dev/null \
	  || $(VENV)/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
	@touch $@

fetch: $(TOOL_STAMP)
	@$(HEADROOM) fetch

apply: $(TOOL_STAMP)
	@$(HEADROOM) apply $(if $(filter-out 0,$(FORCE)),--force)

export: $(TOOL_STAMP)
	@$(HEADROOM) export

check-export: $(TOOL_STAMP)
	@$(HEADROOM) export --check

build: $(TOOL_STAMP)
	@$(HEADROOM) build $(if $(filter-out 0,$(FORCE)),--force)

index: $(TOOL_STAMP)
	@$(HEADROOM) index

test: $(TOOL_STAMP)
	@$(HEADROOM) test --upstream $(UPSTREAM)

unit: $(TOOL_STAMP)
	@$(VENV)/bin/python -m pytest tests -m "not integration"

check: $(TOOL_STAMP)
	@$(VENV)/bin/python -m pytest tests
	@$(MAKE) --no-print-directory apply check-export build test

clean: $(TOOL_STAMP)
	@$(HEADROOM) clean

distclean:
	rm -rf dist build $(VENV)
