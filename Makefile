# headroom: every target is a thin call to one `headroom` subcommand.
#   make apply build test    the main job: checkouts, wheels + index, proof + upstream suites
#   make check               the project's own tests, then the main job
# Options: V=1 (show everything), FORCE=1 (apply over unsaved work, saved to a bundle first),
#          ONLY=name (one upstream), UPSTREAM=default|full|none (upstream suite selection),
#          TINYHUB=0 (upstream suites without the local tiny hub of random-weight stand-ins).
#   make rebase PIN=transformers==5.23.0 [DROP=0002]   then rebase-continue / rebase-abort
#   make pr PATCH=transformers/0001                    writes build/pr/<patch>/
#   make bench BENCH=quick|full [RELEASES=5.5.4,5.23.0]   memory benchmark + pipeline timing (default full)

PYTHON  ?= python3
VENV    ?= .venv
UPSTREAM ?= default
TINYHUB ?= 1
BENCH   ?= full
HEADROOM = $(VENV)/bin/headroom $(if $(filter-out 0,$(V)),-v) $(foreach n,$(ONLY),--only $(n))
TOOL_STAMP = $(VENV)/.installed

.PHONY: all apply export check-export fetch build index test check unit clean distclean help \
        rebase rebase-continue rebase-abort pr bench

all: apply build

help:
	@sed -n '1,11p' Makefile

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
	@$(HEADROOM) test --upstream $(UPSTREAM) $(if $(filter 0,$(TINYHUB)),--no-tinyhub)

unit: $(TOOL_STAMP)
	@$(VENV)/bin/python -m pytest tests -m "not integration"

check: $(TOOL_STAMP)
	@$(VENV)/bin/python -m pytest tests
	@$(MAKE) --no-print-directory apply check-export build test
	@$(HEADROOM) bench --mode quick

rebase: $(TOOL_STAMP)
	@test -n "$(PIN)" || { echo "usage: make rebase PIN=name==version [DROP=0002,0003]" >&2; exit 2; }
	@$(HEADROOM) rebase $(PIN) $(if $(DROP),--drop $(DROP))

rebase-continue: $(TOOL_STAMP)
	@$(HEADROOM) rebase-continue $(if $(DROP),--drop $(DROP))

rebase-abort: $(TOOL_STAMP)
	@$(HEADROOM) rebase-abort

pr: $(TOOL_STAMP)
	@test -n "$(PATCH)" || { echo "usage: make pr PATCH=transformers/0001" >&2; exit 2; }
	@$(HEADROOM) pr $(PATCH)

bench: $(TOOL_STAMP)
	@$(HEADROOM) bench --mode $(BENCH) $(if $(RELEASES),--releases $(RELEASES))

clean: $(TOOL_STAMP)
	@$(HEADROOM) clean

distclean:
	rm -rf dist build $(VENV)
