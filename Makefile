# Everything a fresh clone needs lives here: `make run` and `make test` create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MODEL_DIR ?= .cache/tiny-sd
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: install browser run test lint bench bench-gpu clean lock image deploy

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	# The CPU build first: any other torch request would pull a multi-GB CUDA build.
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e '.[test,bench]'
	touch $(STAMP)

$(MODEL_DIR)/model_index.json: | $(STAMP)
	$(PY) -m serve_app.testing.tiny_model $(MODEL_DIR)

# deployments/local.yaml's catalogue: a second tiny model (other weights) and a tiny LoRA.
.cache/tiny-sd-b/model_index.json: | $(STAMP)
	$(PY) -m serve_app.testing.tiny_model .cache/tiny-sd-b --seed 7

.cache/tiny-lora/pytorch_lora_weights.safetensors: | $(STAMP)
	$(PY) -m serve_app.testing.tiny_model .cache/tiny-lora --kind lora

TINY_MODELS := $(MODEL_DIR)/model_index.json .cache/tiny-sd-b/model_index.json .cache/tiny-lora/pytorch_lora_weights.safetensors

run: $(STAMP) $(TINY_MODELS)
	@echo "Starting raydiffusion on http://127.0.0.1:8000 (requests wait until the model has loaded)."
	@echo "  curl -o cat.png 'http://127.0.0.1:8000/imagine?prompt=a+cat'"
	@echo "  OpenAI SDK base_url: http://127.0.0.1:8000/v1    docs: http://127.0.0.1:8000/docs"
	$(VENV)/bin/serve run deployments/local.yaml

# The browser tests drive Debian's Chromium through Playwright, never a browser Playwright downloads
# (nothing but package registries is reachable from CI). Skipped when it is already installed.
BROWSER := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
$(BROWSER):
	$(SUDO) apt-get update
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium chromium-driver fonts-liberation

browser: $(BROWSER)

# Two workers: one runs every Ray Serve and browser module in order on one shared Ray, the other
# the pure-logic and moto modules meanwhile (tests/conftest.py groups them).
test: $(STAMP) $(BROWSER)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -n 2 --dist loadgroup
	$(PY) -m bench.reliability  # RELIABILITY.md's and README's measured sections, from this run

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# The autoscaling row and plot come from the simulated-cluster test; run it when no run left its
# timeline behind (a fresh clone), so `make bench` alone reproduces every figure.
bench: $(STAMP) $(MODEL_DIR)/model_index.json
	test -f .cache/autoscaling-sim.json || $(PY) -m pytest -q tests/serve/test_autoscaling.py
	$(PY) -m bench

# Speed recipes on this machine's GPU with the real SD 1.5 / SDXL architectures and random weights (no
# download, no network): bench/results/<date>-gpu-<device>.json, a plot and a table. Without CUDA it
# runs the tiny model at 64x64 (proves it works; not GPU figures).
bench-gpu: $(STAMP)
	$(PY) -m bench.gpu

# The GPU image's exact versions (constraints-gpu.txt), resolved from PyPI for the image's platform.
lock: $(STAMP)
	$(PY) -m serve_app.provisioning.image_lock

# Build the image cluster.yaml names (written there by `raydiffusion-aws bootstrap`) and push it to
# ECR. Needs Docker and the AWS CLI. Tags are immutable: bump `version` in pyproject.toml and run
# bootstrap again for a new image.
IMAGE = $(shell $(PY) -m serve_app.provisioning image-uri 2>/dev/null)
REGISTRY = $(firstword $(subst /, ,$(IMAGE)))
ECR_REGION = $(word 4,$(subst ., ,$(REGISTRY)))
image: $(STAMP)
	@case "$(IMAGE)" in *.dkr.ecr.*) ;; *) echo "cluster.yaml names no ECR image: run raydiffusion-aws bootstrap first"; exit 1;; esac
	docker build --platform linux/amd64 -t $(IMAGE) .
	aws ecr get-login-password --region $(ECR_REGION) | docker login --username AWS --password-stdin $(REGISTRY)
	docker push $(IMAGE)

# `serve deploy` that waits until the application is RUNNING and prints Serve's error if not.
# On AWS run `ray dashboard cluster.yaml` first: it forwards the head's dashboard to localhost:8265.
DEPLOY_CONFIG ?= deployments/aws.yaml
deploy: $(STAMP)
	$(PY) -m serve_app.ops.deploy $(DEPLOY_CONFIG)

clean:
	rm -rf $(VENV) .cache
