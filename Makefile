# The two commands in README.md: `make run` (the main job) and `make test` (the test suite).
# Both first run scripts/setup.sh, which is idempotent.
CONFIG ?= configs/primitives.yaml
PY := .venv/bin/python
export LP_NUM_THREADS ?= 0

.PHONY: setup run test bench lint
setup:
	@bash scripts/setup.sh

run: setup
	$(PY) -m learners.run --config $(CONFIG) $(ARGS)

test: setup
	$(PY) -m pytest -q $(ARGS)

lint: setup
	$(PY) -m ruff check .

bench: setup
	$(PY) benchmarks/render.py --quick
