# The commands people type. `make run` executes the whole series; `make test` checks it.
# Both create the virtual environment in .venv first if it is missing.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# torch is installed first, on its own: a CPU build where there is no NVIDIA GPU. Here
# `torch==2.13.0` is a local CPU wheel; elsewhere set TORCH_PIP_ARGS, e.g.
#   make TORCH_PIP_ARGS="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
TORCH_PIP_ARGS ?= torch==2.13.0
# The chapters, then the exercise solutions (notebooks/solutions/NN_<name>_solutions.ipynb).
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb)) \
	$(sort $(wildcard notebooks/solutions/[0-9][0-9]_*_solutions.ipynb))
PYTEST_ARGS ?=
LINT_PATHS := shared tests data/scripts bench $(NOTEBOOKS)

.PHONY: help setup run notebooks test unit nbval test-browser lint format lab data pretrain sft rm dpo ppo judge bench clean

help:
	@echo "make run    - set up if needed, then execute every notebook and solution in order (outputs in place)"
	@echo "make test   - set up if needed, then lint, unit tests, nbval over every notebook and the browser test"
	@echo "make test-browser - chapters 5 and 12 in JupyterLab in headless Chromium (installs Debian's chromium if missing)"
	@echo "make lab    - JupyterLab on the project's environment"
	@echo "make data   - regenerate data/ (corpora, tokenizer) byte for byte"
	@echo "make bench  - speed figures in one table, bench/RESULTS.md (tokenizer, training, KV cache, server)"
	@echo "make pretrain - train the released base model (data/checkpoints/base_small.pt)"
	@echo "make sft    - instruction-tune the base model (data/checkpoints/sft.pt)"
	@echo "make rm     - train the reward model on preference pairs (data/checkpoints/rm.pt)"
	@echo "make dpo    - DPO from the SFT model, loss variants, beta sweep, round 2 (data/checkpoints/dpo.pt)"
	@echo "make ppo    - PPO from the SFT model against the reward model, best-of-n (data/checkpoints/ppo.pt)"
	@echo "make judge  - the chapter 12 judge: SFT model, context 1024, judge data (data/checkpoints/judge.pt)"
	@echo "make lint   - ruff on the package, the tests, the scripts, the benchmarks and the notebooks"
	@echo "make clean  - remove the environment and caches"

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@if $(BIN)/python -c "import torch" 2>/dev/null; then \
		echo "torch already installed"; \
	elif command -v nvidia-smi >/dev/null 2>&1; then \
		$(BIN)/pip install torch; \
	else \
		$(BIN)/pip install $(TORCH_PIP_ARGS); \
	fi
	$(BIN)/pip install -r requirements-dev.txt -e .
	touch $(STAMP)

run notebooks: $(STAMP)
	$(BIN)/python tests/tools/run_notebooks.py $(NB)
	$(BIN)/python tests/tools/readme_table.py --write

# Each step timed (install, lint, unit tests, nbval, browser), the split printed at the end.
test:
	@MAKE="$(MAKE)" $(PYTHON) tests/tools/timed_make.py setup lint unit nbval test-browser

unit: $(STAMP)
	$(BIN)/python -m pytest tests $(PYTEST_ARGS)

nbval: $(STAMP)
	$(if $(NOTEBOOKS),,@echo "no notebooks yet"; exit 0)
	LLMS_SCALE=tiny $(BIN)/python -m pytest --nbval-lax --nbval-current-env \
		--nbval-sanitize-with tests/nbval_sanitize.cfg $(PYTEST_ARGS) $(NOTEBOOKS)

# JupyterLab in headless Chromium (Playwright): runs chapter 5 and its decoding playground,
# and chapter 12's judge server; screenshots in tests/browser/screenshots/. Installing
# Chromium may fail outside CI (no root, no apt): then the test skips and says why.
test-browser: $(STAMP)
	sh tests/browser/install_chromium.sh || test -z "$$CI"
	$(BIN)/python -m pytest tests/browser -s -p no:cacheprovider $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(filter-out %.ipynb,$(LINT_PATHS))

format: $(STAMP)
	$(BIN)/ruff check --fix $(LINT_PATHS)
	$(BIN)/ruff format $(filter-out %.ipynb,$(LINT_PATHS))

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks

data: $(STAMP)
	$(BIN)/python data/scripts/make_data.py

# One table of every speed figure (about 6 minutes), written to bench/RESULTS.md.
bench: $(STAMP)
	$(BIN)/python bench/bench_all.py

pretrain: $(STAMP)
	$(BIN)/python data/scripts/pretrain.py --scale small

# Resumes by itself after an interruption (training state in data/cache/).
sft: $(STAMP)
	$(BIN)/python data/scripts/sft.py

rm: $(STAMP)
	$(BIN)/python data/scripts/rm.py

# Resumes by itself after an interruption (finished runs and training state in data/cache/).
dpo: $(STAMP)
	$(BIN)/python data/scripts/dpo.py

# Resumes by itself after an interruption (trainer state in data/cache/).
ppo: $(STAMP)
	$(BIN)/python data/scripts/ppo.py

# Resumes by itself after an interruption (training state in data/cache/judge_*).
judge: $(STAMP)
	$(BIN)/python data/scripts/judge.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache notebooks/.ipynb_checkpoints
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
