# Two commands: `make run` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8501

.PHONY: run test samples bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-install only when the project's dependencies change.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# The dashboard on http://$(HOST):$(PORT); on first start it submits the sample models' default sweeps once.
run: $(VENV)/.installed
	$(BIN)/python -m dashboard.samples
	$(BIN)/streamlit run dashboard/app.py --server.address $(HOST) --server.port $(PORT) \
		--server.headless true --browser.gatherUsageStats false

# Browser tests drive Debian's chromium; install it when missing (CI runs as root).
test: $(VENV)/.installed-dev
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)
	$(BIN)/pytest -q

# Rebuild every committed sample model from data scikit-learn and Python ship (needs torch);
# `python -m sample_models.build NAME` rebuilds one.
samples: | $(BIN)/python
	$(BIN)/pip install -q -e '.[samples]'
	$(BIN)/python -m sample_models.build

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/int8_latency.py
	$(BIN)/python bench/sweep_throughput.py
	$(BIN)/python bench/sensitivity.py

clean:
	rm -rf $(VENV) workspace
