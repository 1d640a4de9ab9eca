# Set-up and entry points. `make demo` and `make test` create .venv on first use.
# Choose another torch build with e.g. `make test TORCH=torch` (CUDA wheels) or TORCH='torch==2.5.1'.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.nnseg-installed
DEMO_DIR ?= demo
PYTEST_ARGS ?=

WHEEL_CHECK := build/wheel-check

.PHONY: install demo test check wheel-check clean

install: $(STAMP)

$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/nnseg demo --out $(DEMO_DIR)

test: $(STAMP)
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "ERROR: pytest collected no tests" >&2; exit 1; fi; exit $$rc

# Lint, format, types and the layer order (pyproject.toml configures ruff, mypy and import-linter); CI runs it
# after the tests.
check: $(STAMP)
	$(BIN)/ruff check nnseg tests benchmarks setup.py
	$(BIN)/ruff format --check nnseg tests benchmarks setup.py
	$(BIN)/mypy
	$(BIN)/lint-imports

# Build the wheel, install it (not editable) into a fresh venv, and plan a synthetic dataset with the shipped presets.
wheel-check: $(STAMP)
	rm -rf $(WHEEL_CHECK) && mkdir -p $(WHEEL_CHECK)
	$(BIN)/python -m pip wheel --quiet --no-deps --no-build-isolation . -w $(WHEEL_CHECK)/dist
	$(PYTHON) -m venv $(WHEEL_CHECK)/venv
	$(WHEEL_CHECK)/venv/bin/python -m pip install --quiet "$(TORCH)"
	$(WHEEL_CHECK)/venv/bin/python -m pip install --quiet $(WHEEL_CHECK)/dist/nnseg-*.whl
	cd $(WHEEL_CHECK) && venv/bin/nnseg synth data --cases 3 --shape 20,24,24 \
	  && venv/bin/nnseg plan data --work work_default --workers 1 \
	  && venv/bin/nnseg plan data --work work_cpu --preset cpu --workers 1
	@echo "wheel-check: the installed wheel planned with its shipped presets"

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache build
