# Two commands from a fresh clone (Python >= 3.10 and the package registries are all it needs):
#   make train   # trains the default experiment, prints where the TensorBoard logs went
#   make test    # the whole test suite
# The first run creates .venv with uv from the locked versions (uv.lock); later runs reuse it.

PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
VENV_STAMP := .venv/.synced-$(shell cat uv.lock pyproject.toml | cksum | cut -d' ' -f1)
CONFIG ?= configs/dqn_cartpole.yaml
ARGS ?=

.PHONY: train test bench-deps

$(VENV_STAMP): pyproject.toml uv.lock
	@test -x "$(UV)" || { $(PYTHON) -m venv .tools && .tools/bin/pip install -q uv; }
	$(UV) sync --frozen
	@rm -f .venv/.synced-* && touch $@

train: $(VENV_STAMP)
	.venv/bin/python cli.py fit --config $(CONFIG) $(ARGS)

test: $(VENV_STAMP)
	.venv/bin/python -m pytest $(ARGS)

# stable-baselines3 for the side-by-side benchmarks in benchmarks/
bench-deps: $(VENV_STAMP)
	$(UV) sync --frozen --group bench
