# One entry point for chores; CI runs `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.DEFAULT_GOAL := help
.PHONY: help install test test-unit chaos demo model bench broker lint typecheck rules bench-restart clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

# promtool (alert rule checks and unit tests) from Debian's prometheus package, unpacked
# into the venv: no service is installed or started
$(BIN)/promtool: | $(STAMP)
	rm -rf $(VENV)/prometheus-deb && mkdir -p $(VENV)/prometheus-deb
	cd $(VENV)/prometheus-deb && apt-get download prometheus
	dpkg-deb -x $(VENV)/prometheus-deb/prometheus_*.deb $(VENV)/prometheus-deb/unpacked
	cp $(VENV)/prometheus-deb/unpacked/usr/bin/promtool $@
	rm -rf $(VENV)/prometheus-deb

install: $(STAMP) $(BIN)/promtool  ## create .venv and install the worker with its dev extra, and promtool

test: lint typecheck  ## lint, typecheck, then the whole suite (unit, agent, integration on the embedded broker)
	$(BIN)/python -m pytest -q

chaos: install  ## the SIGKILL fault suite at full scale: 51,024 messages, 10% unkeyed, both clocks, two workers
	CHURN_FAULTS_FULL=1 $(BIN)/python -m pytest -q -s tests/integration/test_faults.py

test-unit: install  ## run only the fast pure tests
	$(BIN)/python -m pytest -q tests/unit

demo: install  ## broker + worker + sample stream; prints triggers and stops by itself
	$(BIN)/churn-worker demo

model: install  ## rebuild models/churn-v1 reproducibly from the synthetic generator
	$(BIN)/churn-worker train --synthetic --out models/churn-v1   # the defaults: activity within 30 days

bench: install  ## measure throughput, latency, memory and tick cost beside the ceilings (writes bench.json)
	$(BIN)/churn-worker bench --json bench.json

broker: install  ## start the embedded Kafka-protocol broker on a free port
	$(BIN)/churn-worker broker

lint: install  ## ruff
	$(BIN)/python -m ruff check worker tests

typecheck: install  ## mypy on the package
	$(BIN)/python -m mypy worker

bench-restart: install  ## restart-to-ready and memory with 1,000,000 customers, memory and RocksDB stores (about 15 minutes)
	$(BIN)/python -m worker.tools.restart_bench --json restart-bench.json

rules: install  ## write deploy/k8s/prometheusrule.yaml from deploy/prometheus/alerts.yml
	$(BIN)/python -m worker.tools.deploy_rules

clean:  ## remove the virtual environment and local state
	rm -rf $(VENV) churn-data .pytest_cache *.egg-info
