# Every target bootstraps .venv on a fresh machine; nothing needs installing by hand.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

CHROMIUM := /usr/bin/chromium
APT_LOG := $(or $(TMPDIR),/tmp)/stagewatch-apt-chromium.log

.PHONY: install test lint browser-deps demo ui reliability bench clean stack stack-down

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

# tests/browser drive Debian's Chromium (Playwright cannot download browsers here). Installed when
# root; otherwise one loud line, and pytest prints the same reason with the skipped tests.
browser-deps:
	@if [ -x $(CHROMIUM) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing chromium for the browser tests (log: $(APT_LOG))"; \
		export DEBIAN_FRONTEND=noninteractive; \
		{ apt-get install -y -q chromium || { apt-get update -q && apt-get install -y -q chromium; }; } \
			>$(APT_LOG) 2>&1 \
		|| echo "!!! BROWSER TESTS WILL BE SKIPPED: apt-get install chromium failed, see $(APT_LOG) !!!"; \
	else \
		echo "!!! BROWSER TESTS WILL BE SKIPPED: $(CHROMIUM) is missing and only root can apt-get install chromium !!!"; \
	fi

test: $(STAMP) lint browser-deps
	$(BIN)/pytest -n auto --dist loadgroup

demo: $(STAMP)
	$(BIN)/stagewatch demo

ui: $(STAMP)
	$(BIN)/python -m deployments.ui

# Prefect's server on PostgreSQL, two process workers, the fan-out deployments, the webhook
# receiver; in the background (state in .stack/). deployments/README.md has the details.
stack: $(STAMP)
	$(BIN)/stagewatch stack up

stack-down: $(STAMP)
	$(BIN)/stagewatch stack down

reliability: $(STAMP)
	$(BIN)/python -m tests.reliability.drills

# The stack bench (issue 21, target 1: 1,000 idle integrations through `make stack`) needs the
# PostgreSQL that `make stack` needs; about 5-10 minutes on 2 cores, most of it the first cycle.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	$(BIN)/python -m benchmarks.run
	$(BIN)/python -m benchmarks.stack_bench --idle-cycles 1

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis stagewatch.db* .stack
