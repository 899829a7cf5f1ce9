# Two entry points: `make demo` and `make test`. Both create .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-e2e-picows serve bench-media bench-load bench-peers bench-report clean

$(STAMP): pyproject.toml setup.py gateway/audio/_mdf.c gateway/audio/_mdf_fft.h
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/gateway demo $(DEMO_ARGS)

# Two pytest-xdist workers; the end-to-end tests keep to one of them (tests/conftest.py). Then
# the tests marked solo (a latency measured on the real clock: barge-in in Chromium and at a
# WebRTC peer) run alone, with the machine to themselves.
PYTEST_WORKERS ?= 2

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadgroup -m "not solo" $(PYTEST_ARGS)
	$(BIN)/python -m pytest -q -n 0 -m solo $(PYTEST_ARGS)

# The whole end-to-end suite with every stream served by the picows media listener.
test-e2e-picows: $(STAMP)
	GATEWAY_TEST_MEDIA_LISTENER=picows $(BIN)/python -m pytest -q tests/e2e $(PYTEST_ARGS)

serve: $(STAMP)
	$(BIN)/gateway serve

bench-media: $(STAMP)
	$(BIN)/gateway bench media

bench-load: $(STAMP)
	$(BIN)/gateway bench load

bench-peers: $(STAMP)
	$(BIN)/gateway bench peers

bench-report: $(STAMP)
	$(BIN)/gateway bench report

clean:
	rm -rf $(VENV) .pytest_cache gateway.db recordings
