# The README's two commands: `make site` and `make test`. Both set everything up first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
SOURCES := pyproject.toml $(shell find reportgen templates models -type f -not -path '*/__pycache__/*')

.PHONY: site test benchmark clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Non-editable on purpose: what we build and test is what `pip install .` gives a user.
$(VENV)/.installed: $(BIN)/python $(SOURCES)
	$(BIN)/python -m pip install --quiet ".[test,beam]"
	# tf-keras writes the notebook-format checkpoints in the tests; without --no-deps pip would
	# pull the full tensorflow package beside tensorflow-cpu.
	$(BIN)/python -m pip install --quiet --no-deps tf-keras==2.21.0
	touch $@

site: $(VENV)/.installed
	$(BIN)/reportgen build --images 10 --stats-images all $(if $(PREVIOUS),--previous $(PREVIOUS))

# Browser and validator tests need Chromium and Java, and the accessibility tests axe-core (npm);
# install them where we may (root, apt).
test-deps:
	@command -v chromium >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null); } || true
	@command -v java >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jre-headless >/dev/null); } || true
	@command -v npm >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null); } || true
	@test -f $(VENV)/node_modules/axe-core/axe.min.js || npm install --silent --no-audit --no-fund --prefix $(VENV) axe-core@4.14.1

# --durations: the suite's slowest steps in every run, so a test that grows slow is seen where it grows.
# -n auto: one test worker a core, at most 4 (each worker holds TensorFlow and its models, 1-3 GB).
test: $(VENV)/.installed test-deps
	$(BIN)/pytest -q -n auto --maxprocesses 4 --durations=30 tests

# The pages' two benchmarks audit one site, every page kind of it: by default a site of 10 images built
# here; PAGES_SITE=site audits the one `make site` wrote.
PAGES_SITE ?=
BENCH_SITE := $(or $(PAGES_SITE),build/benchmark/site)

benchmark: $(VENV)/.installed test-deps
	@test -x $(VENV)/node_modules/.bin/lighthouse || npm install --silent --no-audit --no-fund --prefix $(VENV) lighthouse@12.2.3
	@echo "make benchmark: $$(date -u '+%Y-%m-%d %H:%M UTC'), commit $$(git rev-parse --short HEAD 2>/dev/null || echo unknown), $$(nproc) cores"
	$(BIN)/python benchmarks/bench_build.py
	$(BIN)/python benchmarks/bench_floor.py
	$(BIN)/python benchmarks/bench_stats.py
	$(BIN)/python benchmarks/bench_compare.py
	$(BIN)/python benchmarks/bench_attribution.py
	$(if $(PAGES_SITE),,$(BIN)/reportgen build --images 10 --out $(BENCH_SITE) -q)
	$(BIN)/python benchmarks/bench_lighthouse.py --site $(BENCH_SITE)
	$(BIN)/python benchmarks/layout_shift.py $(BENCH_SITE)

clean:
	rm -rf $(VENV) site build *.egg-info
