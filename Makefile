# One command to set up and start the app, one to set up and run the tests.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: app test setup sysdeps

$(BIN)/.installed: requirements.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.txt
	touch $@

setup: $(BIN)/.installed

# System packages the tests need: Debian's Chromium for the browser tests (Playwright must
# not download a browser) and redis-server for the Redis-backed queue test.
SYSPKGS := chromium redis-server
sysdeps:
	@missing=""; for c in chromium redis-server; do command -v $$c >/dev/null 2>&1 || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $(SYSPKGS); \
	fi

app: setup
	$(BIN)/streamlit run app.py

test: setup sysdeps
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(BIN)/python -m pytest -q
