# Everything a fresh clone needs lives here: `make run` and `make test` create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Serving needs only the `serve` extra; the test and bench extras (about 400 MB more) come with the
# first `make test` / `make bench` (tests/unit/test_packaging.py keeps `make run` from needing them).
TEST_STAMP := $(VENV)/.installed-test
# The laptop tools alone (raydiffusion-aws, bot_gateway.register, make deploy/image/lock): no torch.
TOOLS_STAMP := $(VENV)/.installed-tools
MODEL_DIR ?= .cache/tiny-sd
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: install browser run test lint bench bench-gpu gpu-wheels gpu-wheels-check gpu-report clean lock image deploy

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	# The CPU build first: any other torch request would pull a multi-GB CUDA build.
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e '.[serve]'
	touch $(STAMP)

$(TOOLS_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e .
	touch $(TOOLS_STAMP)

# On a fresh clone (CI) one resolver pass for serving and the extras together, not two.
$(TEST_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e '.[serve,test,bench]'
	touch $(STAMP) $(TEST_STAMP)

$(MODEL_DIR)/model_index.json: | $(STAMP)
	$(PY) -m serve_app.testing.tiny_model $(MODEL_DIR)

# deployments/local.yaml's catalogue: a second tiny model (other weights) and a tiny LoRA.
.cache/tiny-sd-b/model_index.json: | $(STAMP)
	$(PY) -m serve_app.testing.tiny_model .cache/tiny-sd-b --seed 7

.cache/tiny-lora/pytorch_lora_weights.safetensors: | $(STAMP)
	$(PY) -m serve_app.testing.tiny_model .cache/tiny-lora --kind lora

# ... and a tiny FLUX.1-dev with a LoRA for it (serve_app/testing/tiny_families.py).
.cache/tiny-flux/model_index.json: | $(STAMP)
	$(PY) -m serve_app.testing.tiny_model .cache/tiny-flux --kind flux

.cache/tiny-flux-lora/pytorch_lora_weights.safetensors: | $(STAMP)
	$(PY) -m serve_app.testing.tiny_model .cache/tiny-flux-lora --kind flux-lora

TINY_MODELS := $(MODEL_DIR)/model_index.json .cache/tiny-sd-b/model_index.json .cache/tiny-lora/pytorch_lora_weights.safetensors \
	.cache/tiny-flux/model_index.json .cache/tiny-flux-lora/pytorch_lora_weights.safetensors

# `serve run` with its logs in .cache/serve-run.log; prints where to point a browser, the models
# and how to stop once a model replica is ready (RAYDIFFUSION_RUN_VERBOSE=1: Ray's logs here too).
run: $(STAMP) $(TINY_MODELS)
	@$(PY) -m serve_app.ops.local_run deployments/local.yaml

# The browser tests drive Debian's Chromium through Playwright, never a browser Playwright downloads
# (nothing but package registries is reachable from CI). Skipped when it is already installed.
BROWSER := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
$(BROWSER):
	$(SUDO) apt-get update
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium chromium-driver fonts-liberation

browser: $(BROWSER)

# Three workers: two run the Ray Serve and browser modules, each group in order on a Ray of its own;
# the third the pure-logic and moto modules meanwhile (tests/conftest.py groups them).
test: $(TEST_STAMP) $(BROWSER)
	$(VENV)/bin/ruff check .
	# Bytecode for our own (editable) packages too: with PYTHONDONTWRITEBYTECODE set, as on this
	# CI machine, every Ray worker would compile them from source again.
	$(PY) -m compileall -q serve_app bot_gateway bench tests
	$(PY) -m pytest -q -n 3 --dist loadgroup
	$(PY) -m bench.reliability  # RELIABILITY.md's and README's measured sections, from this run

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check .

# The autoscaling row and plot come from the simulated-cluster test; run it when no run left its
# timeline behind (a fresh clone), so `make bench` alone reproduces every figure.
bench: $(TEST_STAMP) $(MODEL_DIR)/model_index.json
	test -f .cache/autoscaling-sim.json || $(PY) -m pytest -q tests/serve/test_autoscaling.py
	$(PY) -m bench
	$(PY) -m bench.credentials

# Speed recipes on this machine's GPU with the real SD 1.5 / SDXL architectures and random weights (no
# download, no network): bench/results/<date>-gpu-<device>.json, a plot and a table. Without CUDA it
# runs the tiny model at 64x64 (proves it works; not GPU figures).
bench-gpu: $(TEST_STAMP)
	$(PY) -m bench.gpu

# The GPU report (bench/gpu_report/report.py): one unattended measurement for a borrowed GPU machine that has
# CUDA torch but no Ray, diffusers or FastAPI, and no network. gpu-wheels fetches what it lacks
# (.gpu-wheels/, Ray stripped of its Java jars and dashboard client); gpu-wheels-check runs the report
# with the tiny model in a fresh Python 3.12 virtualenv holding only the machine's packages, offline;
# gpu-report runs it here (CUDA: SD 1.5 / SDXL figures; CPU: the tiny model). PRICES="NAME=$$/h ...".
gpu-wheels: $(STAMP)
	$(PY) -m bench.gpu_report.wheels

gpu-wheels-check: gpu-wheels
	bash bench/gpu_report/offline_check.sh --budget-s 400

gpu-report: $(STAMP)
	$(PY) -m bench.gpu_report.report $(foreach p,$(PRICES),--price $(p))

# The GPU image's exact versions (constraints-gpu.txt), resolved from PyPI for the image's platform.
lock: $(TOOLS_STAMP)
	$(PY) -m serve_app.provisioning.image_lock

# Build the image cluster.yaml names (written there by `raydiffusion-aws bootstrap`) and push it to
# ECR. Needs Docker and the AWS CLI. Tags are immutable: bump `version` in pyproject.toml and run
# bootstrap again for a new image.
IMAGE = $(shell $(PY) -m serve_app.provisioning image-uri 2>/dev/null)
REGISTRY = $(firstword $(subst /, ,$(IMAGE)))
ECR_REGION = $(word 4,$(subst ., ,$(REGISTRY)))
image: $(TOOLS_STAMP)
	@case "$(IMAGE)" in *.dkr.ecr.*) ;; *) echo "cluster.yaml names no ECR image: run raydiffusion-aws bootstrap first"; exit 1;; esac
	docker build --platform linux/amd64 -t $(IMAGE) .
	aws ecr get-login-password --region $(ECR_REGION) | docker login --username AWS --password-stdin $(REGISTRY)
	docker push $(IMAGE)

# `serve deploy` that waits until the application is RUNNING and prints Serve's error if not.
# On AWS run `ray dashboard cluster.yaml` first: it forwards the head's dashboard to localhost:8265.
DEPLOY_CONFIG ?= deployments/aws.yaml
deploy: $(TOOLS_STAMP)
	$(PY) -m serve_app.ops.deploy $(DEPLOY_CONFIG)

clean:
	rm -rf $(VENV) .cache
