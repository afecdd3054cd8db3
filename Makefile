# The two commands a newcomer runs: `make demo` and `make test`. Both set themselves up.
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: setup system-deps demo test test-quick lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,cluster]'
	$(PY) scripts/fetch_leaflet.py
	touch $(STAMP)

setup: $(STAMP)

## demo: generate Sentinel-2 SAFE scenes, compute NDVI on local cores, write quicklooks
demo: $(STAMP)
	$(PY) -m tilewise.demo --out demo-output

## system-deps: Debian packages some tests need (slurmctld slurmd slurm-client munge parallel chromium), when root
system-deps:
	scripts/slurm/up.sh --install-only || echo "note: SLURM / GNU parallel not installed; their tests will be skipped"
	if [ "$$(id -u)" = 0 ] && ! command -v chromium >/dev/null 2>&1; then \
		{ DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=300 chromium \
		  || { apt-get update -q -o DPkg::Lock::Timeout=300 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=300 chromium; }; } \
		|| echo "note: chromium not installed; the web viewer's browser test will be skipped"; \
	fi

## test: lint, type-check and the whole test suite (what CI runs); the SLURM tests start their own cluster
test: $(STAMP) system-deps lint
	$(PY) -m pytest $(PYTEST_ARGS)

## test-quick: everything but the tests marked slow
test-quick: $(STAMP)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy

## bench: performance comparisons against peer tools (not part of make test)
bench: $(STAMP)
	$(PY) -m pip install -q -e '.[bench]'
	if [ "$$(id -u)" = 0 ] && ! command -v gdal_calc.py >/dev/null 2>&1; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=300 gdal-bin python3-gdal \
		|| echo "note: gdal_calc.py not installed; the NDVI benchmark reports its row as unavailable"; \
	fi
	$(PY) bench/ndvi_bench.py
	$(PY) bench/focal_bench.py
	$(PY) bench/stack_bench.py
	$(PY) bench/stac_bench.py --repeat 1
	$(PY) bench/executors_bench.py
	$(PY) bench/rasterize_bench.py

clean:
	rm -rf demo-output bench/work .pytest_cache .mypy_cache .ruff_cache
