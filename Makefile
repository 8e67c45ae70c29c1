# exportd — `make run` serves with embedded defaults, `make test` runs every check.
# Both set up everything they need first: .venv (Python packages), .tools (buf, Go plugins),
# and the Debian packages the PDF checks and fonts need.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BUF_VERSION := 1.75.0
BUF := .tools/node_modules/.bin/buf
PY_SOURCES := $(shell find server client/python gen/python -name '*.py' -o -name '*.pyi' 2>/dev/null)

.PHONY: install run test lint typecheck pytest gen contract sdk-test bench system-deps clean

install: $(VENV)/.installed system-deps $(BUF)

$(VENV)/.installed: pyproject.toml $(PY_SOURCES)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@# strict editable mode: mypy and the import system see the same exportd.* packages
	@$(PY) -m pip install -q -e '.[dev]' --config-settings editable_mode=strict 2>&1 | grep -v -i -E 'warn|editable|careful|^\s*\*+|^\s*$$|!!|wheel_obj|import/use' || true
	@$(PY) -c "import exportd.server, exportd.client, exportd.v1" && touch $@

system-deps:
	@missing=""; \
	command -v pdftotext >/dev/null || missing="$$missing poppler-utils"; \
	test -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf || missing="$$missing fonts-dejavu-core"; \
	test -e /usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf || missing="$$missing fonts-droid-fallback"; \
	ls /usr/share/fonts/truetype/nanum/NanumGothic*.ttf >/dev/null 2>&1 || missing="$$missing fonts-nanum"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(BUF):
	@npm install --silent --no-audit --no-fund --prefix .tools @bufbuild/buf@$(BUF_VERSION)

run: install
	$(VENV)/bin/exportd serve

gen: $(VENV)/.installed $(BUF)
	bash scripts/gen.sh
	@if [ -f scripts/gen_sdks.sh ]; then bash scripts/gen_sdks.sh; fi

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.installed
	@# by path: mypy then reports on the sources themselves, not the installed link tree
	$(VENV)/bin/mypy server client/python

contract: $(BUF)
	$(BUF) lint
	$(BUF) format -d --exit-code
	@if [ -f scripts/check_contract.sh ]; then bash scripts/check_contract.sh; fi

pytest: install
	$(VENV)/bin/pytest -q

sdk-test: install
	@if [ -f scripts/test_sdks.sh ]; then bash scripts/test_sdks.sh; fi

test: install lint typecheck contract pytest sdk-test

bench: install
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .tools build *.egg-info .mypy_cache .ruff_cache .pytest_cache
