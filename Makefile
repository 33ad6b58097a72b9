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
	$(UV) run --no-sync lint-imports --no-cache
	$(UV) run --no-sync python tests/lint/check_private_internals.py

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

# ---- Composer's images -----------------------------------------------------------------------------
# compat/images/<image>.txt holds a Composer image's package versions (from Google's "Preinstalled packages
# changelog") and compat/images/<image>/ its lock. `make test-compat IMAGE=<image>` syncs that lock into
# compat/images/<image>/.venv and runs the DAG-level suite, the notifier tests and the fault matrix's quick
# subset there; without IMAGE, the oldest image (docs/deploy.md, "Supported Airflow versions"). The newest
# image's versions are also the root uv.lock's, so `make test` runs on it.
COMPAT_IMAGES := $(shell python3 compat/images/images.py list)
IMAGE ?= $(firstword $(COMPAT_IMAGES))
COMPAT_TESTS := tests/dags tests/notify tests/faults/test_fault_matrix.py
# Two xdist workers, each with its own Airflow home and emulators: Airflow 3.1 runs each task's execution
# API calls through an in-process bridge (~0.8 s a call here), so the time is waiting, not CPU.
COMPAT_PYTEST_ARGS ?= -n 2
COMPAT_QUICK_FAULTS := baseline or op-internal_error-once-stop or report-after-failed-snapshot or vm-deleted-before-start or not-on-path or dags or notify

.PHONY: test-compat dist
test-compat: $(UV)
	@test -f compat/images/$(IMAGE)/uv.lock || { echo "no compat/images/$(IMAGE)/uv.lock; the images: $(COMPAT_IMAGES)"; exit 2; }
	python3 compat/images/images.py check
	cd compat/images/$(IMAGE) && $(UV) sync --frozen --compile-bytecode
	compat/images/$(IMAGE)/.venv/bin/python -m pytest $(COMPAT_TESTS) -k "$(COMPAT_QUICK_FAULTS)" -p no:cacheprovider \
		$(COMPAT_PYTEST_ARGS)

# A wheel and an sdist in dist/, and a check that the wheel pins no Airflow (docs/deploy.md).
dist: $(UV)
	rm -rf dist
	$(UV) build --out-dir dist
	$(UV) run --no-sync python tests/packaging/wheel_metadata.py dist/*.whl
