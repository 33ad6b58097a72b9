# Two commands for a new user: `make demo` (a real backup DAG run against the local emulator)
# and `make test` (everything CI runs). Both create the environment themselves from uv.lock.
UV_VERSION := 0.13.9
UV := $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.tools/bin/uv)

.PHONY: demo test env lint typecheck terraform-check pytest clean

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

pytest: env
	$(UV) run --no-sync pytest

test: lint typecheck terraform-check pytest

clean:
	rm -rf .venv .tools .pytest_cache .mypy_cache .ruff_cache
