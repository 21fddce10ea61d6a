# wsss: every target creates the local .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is installed first so that pip keeps this build; on a GPU machine pick your CUDA build, e.g.
#   make TORCH="torch torchvision --index-url https://download.pytorch.org/whl/cu128" test
TORCH ?= torch==2.14.1 torchvision==0.29.1
RECIPE ?= cam_baseline_synthetic
SWEEP ?= cam_baseline_lr
COUNT ?=
ARGS ?=
CKPT ?=
export HF_HUB_OFFLINE ?= 1
export WANDB_MODE ?= offline

.PHONY: demo test test-fast train check predict sweep bench lint clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade-strategy only-if-needed $(TORCH)
	$(BIN)/pip install -e '.[viz,dev,crf]'
	# wandb's offline sweep sampler; --no-deps because its own pins would push numpy below 2
	$(BIN)/pip install --no-deps sweeps==0.3.0 jsonref
	touch $@

demo: $(BIN)/.installed  ## generate synthetic data, run the three stages, print the table
	$(BIN)/wsss demo $(ARGS)

test: $(BIN)/.installed  ## the whole test suite (slow end-to-end tests included)
	$(BIN)/python -m pytest -q $(ARGS)

test-fast: $(BIN)/.installed
	$(BIN)/python -m pytest -q -m "not slow" $(ARGS)

train: $(BIN)/.installed  ## RESUME=1 continues the recipe's last run from its last.ckpt
	$(BIN)/wsss $(if $(RESUME),resume,fit) --config recipes/$(RECIPE).yaml $(ARGS)

check: $(BIN)/.installed  ## dry run of a recipe: weights loaded, classes, samples per split, one batch
	$(BIN)/wsss check --config recipes/$(RECIPE).yaml $(ARGS)

predict: $(BIN)/.installed
	@test -n "$(CKPT)" || { echo "usage: make predict RECIPE=<name> CKPT=<path to .ckpt>"; exit 2; }
	$(BIN)/wsss predict --config recipes/$(RECIPE).yaml --ckpt_path $(CKPT) $(ARGS)

sweep: $(BIN)/.installed  ## WANDB_MODE=online: wandb sweep + agent; otherwise sampled and run locally
	$(BIN)/wsss sweep $(if $(filter online,$(WANDB_MODE)),,--local) recipes/sweeps/$(SWEEP).yaml \
		$(if $(COUNT),--count $(COUNT)) $(ARGS)

bench: $(BIN)/.installed
	$(BIN)/python bench/run.py $(ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check wsss tests bench scripts

clean:
	rm -rf runs lightning_logs wandb
