# Lantern: `make run` chats in the terminal, `make test` runs the whole suite.
# Both create .venv when missing and install everything; a second run installs nothing.

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
# Debian packages the tests drive for real (command:package).
SYSTEM_TOOLS := tmux:tmux sshd:openssh-server chromium:chromium

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc)
# llama.cpp's default -march=native enables AMX on CPUs that advertise it; virtual machines that
# do not grant AMX state then die with SIGILL on the first batched prompt. A fixed AVX2 build
# runs on any x86_64 machine of the last decade, and pip's cached wheel stays valid on all of them.
ifeq ($(shell uname -m),x86_64)
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
endif

.PHONY: run test install system-deps bench lint clean

run: install
	$(VENV)/bin/lantern

# One test worker per core; whole modules go to a worker, so module fixtures are built once.
TEST_WORKERS ?= $(shell nproc)

test: install system-deps
	$(VENV)/bin/ruff check --quiet .
	$(VENV)/bin/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

install: $(STAMP)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(VENV)/bin/python
	@echo "Installing Lantern into $(VENV) (the first time builds llama.cpp: about 6-10 minutes)"
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	@# Compiled once here, the twin's layers are not compiled again by the first `twin build`.
	$(VENV)/bin/lantern twin warm-up || echo "(not fatal: the first twin build will compile its layers itself)"
	touch $@

system-deps:
	@missing=""; for pair in $(SYSTEM_TOOLS); do \
		command -v "$${pair%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/$${pair%%:*}" ] || missing="$$missing $${pair##*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing system packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

bench: install
	$(VENV)/bin/python -m pip install --quiet -e '.[test,bench]'
	$(VENV)/bin/python bench/bench_runtime.py
	$(VENV)/bin/python bench/bench_tui.py
	$(VENV)/bin/python bench/bench_api.py
	$(VENV)/bin/python bench/bench_memory.py
	$(VENV)/bin/python bench/bench_quantize.py

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
