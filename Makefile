# Everything a fresh clone needs lives here: `make run` and `make test` create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MODEL_DIR ?= .cache/tiny-sd
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: install run test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	# The CPU build first: any other torch request would pull a multi-GB CUDA build.
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e '.[test,bench]'
	touch $(STAMP)

$(MODEL_DIR)/model_index.json: | $(STAMP)
	$(PY) -m serve_app.tiny_model $(MODEL_DIR)

run: $(STAMP) $(MODEL_DIR)/model_index.json
	@echo "Starting raydiffusion on http://127.0.0.1:8000 (requests wait until the model has loaded)."
	@echo "  curl -o cat.png 'http://127.0.0.1:8000/imagine?prompt=a+cat'"
	@echo "  OpenAI SDK base_url: http://127.0.0.1:8000/v1    docs: http://127.0.0.1:8000/docs"
	$(VENV)/bin/serve run deployments/local.yaml

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# The autoscaling row and plot come from the simulated-cluster test; run it when no run left its
# timeline behind (a fresh clone), so `make bench` alone reproduces every figure.
bench: $(STAMP) $(MODEL_DIR)/model_index.json
	test -f .cache/autoscaling-sim.json || $(PY) -m pytest -q tests/test_autoscaling.py
	$(PY) -m bench

clean:
	rm -rf $(VENV) .cache
