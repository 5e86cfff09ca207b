# The README names these targets. `make demo` and `make test` set everything
# up on a fresh machine (a virtualenv in .venv with the project installed).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint typecheck bench clean lock

# Every package, the build tools included, comes at the version pinned in
# constraints.txt (CI and deploy/Dockerfile install from it too), so a release
# of someone else's package cannot change a build. `make lock` refreshes it.
$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt pip setuptools wheel
	$(BIN)/pip install --quiet -c constraints.txt --no-build-isolation -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The demo's flags go in DEMO_ARGS, e.g. make demo DEMO_ARGS="--duration 60 --speed 100"
DEMO_ARGS ?=
demo: $(STAMP)
	$(BIN)/hotspots demo $(DEMO_ARGS)

test: $(STAMP)
	$(BIN)/ruff check streamer tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check streamer tests bench
	$(BIN)/ruff format --check streamer tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench

# The newest releases that pyproject.toml allows, resolved in a scratch
# virtualenv and written to constraints.txt; commit it once `make test` passes.
LOCK_VENV := .lock-venv
lock:
	rm -rf $(LOCK_VENV)
	$(PY) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet --upgrade pip setuptools wheel
	$(LOCK_VENV)/bin/pip install --quiet '.[dev]'
	{ echo "# Pinned versions of every package (make lock writes it; make install uses it)."; \
	  $(LOCK_VENV)/bin/pip freeze --all --exclude hotspots; } > constraints.txt
	rm -rf $(LOCK_VENV)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
