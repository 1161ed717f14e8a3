# headroom: every target is a thin call to one `headroom` subcommand.
#   make apply build test    the main job: checkouts, wheels + index, proof + upstream suites
#   make check               the project's own tests, then the main job
# Options: V=1 (show everything), NO_WAIT=1 (exit 40 at once if another run holds a lock), FORCE=1 (apply over unsaved work, saved to a bundle first),
#          ONLY=name (one upstream), UPSTREAM=default|full|none (upstream suite selection),
#          TINYHUB=0 (upstream suites without the local tiny hub of random-weight stand-ins),
#          JOBS=auto|N|1 (pytest-xdist workers for the upstream suites; default auto: one per core, 1: one process).
#   make rebase PIN=transformers==5.23.0 [DROP=0002]   then rebase-continue / rebase-abort
#   make canary [RELEASES=accelerate==1.16.0,transformers==5.25.0] [PRE=1]   new releases vs the series: build/canary/
#   make pr PATCH=transformers/0001                    writes build/pr/<patch>/
#   make bench BENCH=quick|full [RELEASES=5.5.4,5.23.0@1.15.0] [PART=releases|prepare]   memory benchmark + pipeline timing (default full)
#   make publish REPOSITORY=<upload url or ~/.pypirc section> [INDEX_URL=<simple url>]
#   make serve [PORT=8000]        serve dist/ (the static index) on 127.0.0.1
#   make inspect WHEEL=dist/x.whl|name [PY=env/bin/python]   a wheel's SBOM: upstream, patches, links
#   make verify WHEEL=dist/x.whl                      rebuild it from the SBOM's pins and series, compare sha256

PYTHON  ?= python3
VENV    ?= .venv
UPSTREAM ?= default
TINYHUB ?= 1
JOBS    ?= auto
BENCH   ?= full
HEADROOM = $(VENV)/bin/headroom $(if $(filter-out 0,$(V)),-v) $(if $(filter-out 0,$(NO_WAIT)),--no-wait) $(foreach n,$(ONLY),--only $(n))
TOOL_STAMP = $(VENV)/.installed

.PHONY: all apply export check-export fetch build index test check unit clean distclean help \
        rebase rebase-continue rebase-abort canary pr bench publish serve inspect verify

all: apply build

help:
	@sed -n '1,15p' Makefile

$(TOOL_STAMP): requirements/tools.txt requirements/publish.txt pyproject.toml
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
	@$(HEADROOM) test --upstream $(UPSTREAM) --jobs $(JOBS) $(if $(filter 0,$(TINYHUB)),--no-tinyhub)

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

canary: $(TOOL_STAMP)
	@$(HEADROOM) canary $(if $(RELEASES),--releases '$(RELEASES)') $(if $(filter-out 0,$(PRE)),--pre)

pr: $(TOOL_STAMP)
	@test -n "$(PATCH)" || { echo "usage: make pr PATCH=transformers/0001" >&2; exit 2; }
	@$(HEADROOM) pr $(PATCH)

bench: $(TOOL_STAMP)
	@$(HEADROOM) bench --mode $(BENCH) $(if $(RELEASES),--releases $(RELEASES)) $(if $(PART),--part $(PART))

publish: $(TOOL_STAMP)
	@test -n "$(REPOSITORY)" || { echo "usage: make publish REPOSITORY=<upload url or ~/.pypirc section> [INDEX_URL=<simple url>]" >&2; exit 2; }
	@$(HEADROOM) publish --repository '$(REPOSITORY)' $(if $(INDEX_URL),--index-url '$(INDEX_URL)')

serve: $(TOOL_STAMP)
	@$(HEADROOM) serve $(if $(PORT),--port $(PORT))

inspect: $(TOOL_STAMP)
	@test -n "$(WHEEL)" || { echo "usage: make inspect WHEEL=dist/<wheel>.whl  or  WHEEL=transformers PY=build/envs/patched/bin/python" >&2; exit 2; }
	@$(HEADROOM) inspect $(WHEEL) $(if $(PY),--python $(PY))

verify: $(TOOL_STAMP)
	@test -n "$(WHEEL)" || { echo "usage: make verify WHEEL=dist/<wheel>.whl" >&2; exit 2; }
	@$(HEADROOM) verify $(WHEEL)

clean: $(TOOL_STAMP)
	@$(HEADROOM) clean

distclean:
	rm -rf dist build $(VENV)
