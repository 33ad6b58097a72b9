# Two commands for a new user: `make demo` (a real backup DAG run against the local emulator)
# and `make test` (everything CI runs). Both create the environment themselves from uv.lock.
UV_VERSION := 0.13.9
UV := $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.tools/bin/uv)

.PHONY: demo test test-fast env lint typecheck terraform-check pytest clean

$(CURDIR)/.tools/bin/uv:
	python3 -m venv $(CURDIR)/.tools
	$(CURDIR)/.tools/bin/python -m pip install --quiet "uv==$(UV_VERSION)"

env: $(UV)
	$(UV) sync --frozen --all-extras --compile-bytecode

demo: env
	$(UV) run --no-sync vm-backup demo

lint: env
	$(UV) run --no-sync ruff format --check .
	$(UV) run --no-sync ruff check .

typecheck: env
	$(UV) run --no-sync mypy

terraform-check: $(UV)
	UV=$(UV) bash terraform/check.sh

# pytest-xdist workers, each with its own Airflow home, SQLite DB and emulators (tests/conftest.py). The
# DAG runs mostly wait (on the emulator's operations, Airflow's loops), so 4 workers beat 2 on 2 cores.
PYTEST_WORKERS ?= 4

pytest: env
	$(UV) run --no-sync pytest -n $(PYTEST_WORKERS)

# The developer loop (under 3 minutes on 2 cores): everything but the e2e environment, the benchmark
# scripts and the slow dag.test modules, and the fault matrix's quick subset.
test-fast: env
	$(UV) run --no-sync pytest -n $(PYTEST_WORKERS) -m "not slow or quick"

test: lint typecheck terraform-check pytest

clean:
	rm -rf .venv .tools .pytest_cache .mypy_cache .ruff_cache
