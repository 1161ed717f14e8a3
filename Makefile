# headroom: every target is a thin call to one `headroom` subcommand. `make help` lists them (from the `## `
# comment on each target's line). Options (make variables) are listed by `make help` too; see docs/reference/.
#
#> Options: V=1 (show everything), NO_WAIT=1 (exit 40 at once if another run holds a lock),
#>          FORCE=1 (apply over unsaved work, saved to a bundle first; build: rebuild), ONLY=name (one upstream),
#>          LINE=newest|peft (fetch apply export build test publish canary: one release line of vendor/lines.toml;
#>          default all; rebase: the line it moves, needed when several pin the upstream; pr: the line it proposes from),
#>          UPSTREAM=default|full|guards|none (test: upstream suites; default: default, guards on another torch),
#>          TORCH=primary|newest|all|VERSION (test: the torch of vendor/lines.toml to prove on; canary: VERSION,...|newest),
#>          TINYHUB=0 (test: no local tiny hub),
#>          JOBS=auto|N|1 (test: pytest-xdist workers), PIN=name==version DROP=0002 (rebase),
#>          RELEASES=name==version,... PRE=1 (canary), PATCH=upstream/NNNN (pr),
#>          BENCH=quick|full TRANSFORMERS=X[@Y],... PART=releases|prepare|node_loads|load_phase (bench),
#>          REPOSITORY=url|section INDEX_URL=url (publish), PORT=8000 (serve), WHEEL=file|name PY=python (inspect, verify)

PYTHON  ?= python3
VENV    ?= .venv
UPSTREAM ?=
TINYHUB ?= 1
JOBS    ?= auto
BENCH   ?= full
HEADROOM = $(VENV)/bin/headroom $(if $(filter-out 0,$(V)),-v) $(if $(filter-out 0,$(NO_WAIT)),--no-wait) $(foreach n,$(ONLY),--only $(n)) $(if $(LINE),--line $(LINE))
TOOL_STAMP = $(VENV)/.installed

.PHONY: all apply export check-export fetch build index test check unit docs docs-ref clean distclean help \
        rebase rebase-continue rebase-abort canary pr bench publish serve inspect verify

DOCS_STAMP = $(VENV)/.docs-installed

all: apply build ## apply, then build (what `make` alone does)

help: ## this list: every target, one line each, from the Makefile itself
	@echo "usage: make TARGET [OPTION=value ...]   (the main job: make apply build test)"
	@echo
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_.-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo
	@sed -n 's/^#> \{0,1\}//p' $(MAKEFILE_LIST)

$(TOOL_STAMP): requirements/tools.txt requirements/publish.txt pyproject.toml
	@echo "[setup] tool environment $(VENV)"
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@$(VENV)/bin/python -m pip install -q --disable-pip-version-check -r requirements/tools.txt
	@$(VENV)/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e . 2>/dev/null \
	  || $(VENV)/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
	@touch $@

fetch: $(TOOL_STAMP) ## download and verify the pinned sdists and official wheels (cached)
	@$(HEADROOM) fetch

apply: $(TOOL_STAMP) ## vendor/[<line>/]<name>: each line's pinned releases + the series, a commit per patch [FORCE=1 LINE=]
	@$(HEADROOM) apply $(if $(filter-out 0,$(FORCE)),--force)

export: $(TOOL_STAMP) ## write patches/<name>/ from vendor/<name>'s commits (byte-stable)
	@$(HEADROOM) export

check-export: $(TOOL_STAMP) ## fail (exit 9) if `make export` would change patches/
	@$(HEADROOM) export --check

build: $(TOOL_STAMP) ## one patched wheel per upstream into dist/, then the index dist/simple/ [FORCE=1]
	@$(HEADROOM) build $(if $(filter-out 0,$(FORCE)),--force)

index: $(TOOL_STAMP) ## write the static PEP 503 index dist/simple/
	@$(HEADROOM) index

test: $(TOOL_STAMP) ## each line's proof (red on pristine, green on patched) + upstream suites [UPSTREAM= JOBS= TINYHUB=0 LINE= TORCH=]
	@$(HEADROOM) test $(if $(UPSTREAM),--upstream $(UPSTREAM)) --jobs $(JOBS) $(if $(filter 0,$(TINYHUB)),--no-tinyhub) $(if $(TORCH),--torch $(TORCH))

unit: $(TOOL_STAMP) ## the project's own fast tests (no network, no torch): the loop while editing
	@$(VENV)/bin/python -m pytest tests -m "not integration"

check: $(TOOL_STAMP) ## what CI runs: every tooling test, the docs, then apply check-export build test, quick bench
	@$(VENV)/bin/python -m pytest tests
	@$(MAKE) --no-print-directory docs apply check-export build test
	@$(MAKE) --no-print-directory bench BENCH=quick

rebase: $(TOOL_STAMP) ## move one upstream's series to a new release: PIN=name==version [DROP=0002 LINE=]
	@test -n "$(PIN)" || { echo "usage: make rebase PIN=name==version [DROP=0002,0003] [LINE=newest]" >&2; exit 2; }
	@$(HEADROOM) rebase $(PIN) $(if $(DROP),--drop $(DROP))

rebase-continue: $(TOOL_STAMP) ## go on with a rebase stopped on a conflict [DROP=... ONLY= LINE=]
	@$(HEADROOM) rebase-continue $(if $(DROP),--drop $(DROP))

rebase-abort: $(TOOL_STAMP) ## undo a rebase: pins, patches and checkout as before [ONLY= LINE=]
	@$(HEADROOM) rebase-abort

canary: $(TOOL_STAMP) ## what new upstream and torch releases would do to each line's series [RELEASES=name==version,... TORCH=version PRE=1 LINE=]
	@$(HEADROOM) canary $(if $(RELEASES),--releases '$(RELEASES)') $(if $(TORCH),--torch '$(TORCH)') $(if $(filter-out 0,$(PRE)),--pre)

pr: $(TOOL_STAMP) ## draft one patch for upstream into build/pr/ (never pushes): PATCH=transformers/0001
	@test -n "$(PATCH)" || { echo "usage: make pr PATCH=transformers/0001" >&2; exit 2; }
	@$(HEADROOM) pr $(PATCH)

bench: $(TOOL_STAMP) ## memory benchmark + pipeline timing [BENCH=quick|full TRANSFORMERS=X[@Y],... PART=]
	@test -z "$(RELEASES)" || { echo "make bench: RELEASES= is canary's (name==version); the bench takes TRANSFORMERS=X[@Y],..." >&2; exit 2; }
	@$(HEADROOM) bench --mode $(BENCH) $(if $(TRANSFORMERS),--transformers $(TRANSFORMERS)) $(if $(PART),--part $(PART))

publish: $(TOOL_STAMP) ## upload the built wheels with twine: REPOSITORY=url|section [INDEX_URL=]
	@test -n "$(REPOSITORY)" || { echo "usage: make publish REPOSITORY=<upload url or ~/.pypirc section> [INDEX_URL=<simple url>]" >&2; exit 2; }
	@$(HEADROOM) publish --repository '$(REPOSITORY)' $(if $(INDEX_URL),--index-url '$(INDEX_URL)')

serve: $(TOOL_STAMP) ## serve dist/ (the static index) on 127.0.0.1 [PORT=8000]
	@$(HEADROOM) serve $(if $(PORT),--port $(PORT))

inspect: $(TOOL_STAMP) ## show a wheel's SBOM: WHEEL=dist/x.whl or WHEEL=name [PY=env/bin/python]
	@test -n "$(WHEEL)" || { echo "usage: make inspect WHEEL=dist/<wheel>.whl  or  WHEEL=transformers PY=build/envs/patched/bin/python" >&2; exit 2; }
	@$(HEADROOM) inspect $(WHEEL) $(if $(PY),--python $(PY))

verify: $(TOOL_STAMP) ## rebuild a wheel from its SBOM's pins and series, compare sha256: WHEEL=dist/x.whl
	@test -n "$(WHEEL)" || { echo "usage: make verify WHEEL=dist/<wheel>.whl" >&2; exit 2; }
	@$(HEADROOM) verify $(WHEEL)

clean: $(TOOL_STAMP) ## remove dist/ and build/ (never vendor/)
	@$(HEADROOM) clean

$(DOCS_STAMP): $(TOOL_STAMP) requirements/docs.txt
	@echo "[setup] docs tools in $(VENV)"
	@$(VENV)/bin/python -m pip install -q --disable-pip-version-check -r requirements/docs.txt
	@touch $@

docs-ref: $(TOOL_STAMP) ## regenerate docs/reference/commands.md, exit-codes.md, torch.md from the parser, errors, lines.toml
	@$(HEADROOM) docs

docs: $(DOCS_STAMP) ## build the documentation site into build/site/ (mkdocs --strict: a broken link fails)
	@$(HEADROOM) docs --check
	@NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir build/site
	@echo "[docs] build/site/index.html"

distclean: ## remove dist/, build/ and the tool environment .venv/
	rm -rf dist build $(VENV)
