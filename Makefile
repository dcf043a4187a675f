# Every target creates and uses .venv in the repository root.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# `make demo` installs the runtime only (`.`): the test extras (browsers' drivers, image libraries,
# schema tools) are for `make test`, whose stamp installs `.[test]` and covers the demo's too.
DEMO_STAMP := $(VENV)/.installed-runtime
PORT ?= 8080

.PHONY: demo test lint install bench clean tools chart-crd dashboards system-deps cluster-tools cluster cluster-down bench-operator

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP) $(DEMO_STAMP)

# Quiet: pip's output goes to .venv/install.log, shown only when it fails.
$(DEMO_STAMP): pyproject.toml
	@echo "make demo: installing FraudDemo and its runtime dependencies into $(VENV) (the first run takes about a minute)"
	@$(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip >$(VENV)/install.log 2>&1 \
	  && $(BIN)/pip install --disable-pip-version-check -e . >>$(VENV)/install.log 2>&1 \
	  || { tail -n 30 $(VENV)/install.log >&2; echo "make demo: the install failed; the whole log is $(VENV)/install.log" >&2; exit 1; }
	@touch $(DEMO_STAMP)

install: $(STAMP)

# The data dir (stores, logs, stack.json) is ~/.local/state/frauddemo, kept for the next run
# (FRAUDDEMO_DATA_DIR changes it). Another port: make demo PORT=8081.
demo: $(DEMO_STAMP)
	@$(BIN)/frauddemo up --port $(PORT)

# The cluster tests (tests/cluster/) run a real control plane built from Go modules: where Go is
# missing they are skipped with one line saying so, except in CI, where that fails the run.
test: system-deps $(STAMP) tools lint
	@if command -v go >/dev/null; then \
	  tools/cluster-tools.sh && $(BIN)/python -m pytest -q; \
	elif [ -n "$$CI" ]; then \
	  echo "make test: Go is missing, and CI always runs the cluster tests (tests/cluster): install Go >= 1.24" >&2; exit 2; \
	else \
	  echo "make test: Go is not installed, so the cluster tests (tests/cluster) are skipped; install Go >= 1.24 (https://go.dev/dl) to run them"; \
	  $(BIN)/python -m pytest -q -m "not cluster"; \
	fi

# ruff (lint, and the format check) over every Python file; mypy --strict over the pure modules
# ([tool.ruff] and [tool.mypy] in pyproject.toml). `$(BIN)/ruff format .` fixes the format.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

system-deps:
	tools/system-deps.sh

# The Grafana dashboard and Prometheus rules are generated from code (a test fails when stale).
dashboards: $(STAMP)
	$(BIN)/python dashboards/generate.py

bench: $(STAMP)
	$(BIN)/frauddemo bench replication --json

# The real tools the chart tests run (helm 3.18, the prometheus-operator's schemas), cached in .tools/.
TOOLS := .tools

$(TOOLS)/helm: tools/fetch_helm.py | $(STAMP)
	$(BIN)/python tools/fetch_helm.py $@

$(TOOLS)/prometheus-models/.installed: tools/fetch_prometheus_models.sh tools/prometheus-models/* | system-deps
	tools/fetch_prometheus_models.sh

tools: $(TOOLS)/helm $(TOOLS)/prometheus-models/.installed

# helm reads only files inside the chart: this copies the CRD's single source there (a test fails when stale).
chart-crd:
	cp operator/frauddemo_operator/crd.yaml charts/frauddemo/crds/frauddemos.frauddemo.io.yaml

# A real Kubernetes control plane on loopback (etcd, kube-apiserver, controller-manager, scheduler, kwok
# fake nodes), from pinned upstream binaries built once per machine (tools/cluster-tools.sh).
cluster-tools:
	tools/cluster-tools.sh

cluster: cluster-tools
	tools/cluster.sh up

cluster-down:
	tools/cluster.sh down

# The operator against the cluster `make cluster` runs, beside the emulator (test kit) and the raw API.
bench-operator: $(STAMP)
	PYTHONPATH=testkit $(BIN)/frauddemo bench operator --json --kubeconfig .cluster/kubeconfig

clean:
	rm -rf $(VENV) $(TOOLS) build *.egg-info

# Images without Docker (tools/images.sh): the FraudDemo image from the Dockerfile and the store image
# (tools/store-image), built with buildah on a local Debian base when the pinned one cannot be pulled,
# loaded into a private containerd's k8s.io namespace. Cached under ~/.cache/frauddemo.
.PHONY: images
images:
	tools/images.sh

# A real node for the local cluster (tools/node.sh): a kubelet and kube-proxy on the private containerd
# that `make images` loads, CNI bridge 10.88.0.0/16; needs `make cluster` first. node-down stops it all.
.PHONY: node-up node-down
node-up:
	tools/node.sh up

node-down:
	tools/node.sh down

# The sample on a real node (tools/node.sh), from the images built here: images, a cluster whose only node
# is this machine (no kwok node), the node with CoreDNS, then the chart with the sample
# (tools/node/sample-values.yaml). `make real-demo-down` stops it all.
.PHONY: real-demo real-demo-down test-real-pods soak-real-pods
real-demo: cluster-tools images
	FAKE_NODES= tools/cluster.sh up
	tools/node.sh up
	KUBECONFIG=.cluster/kubeconfig .tools/helm upgrade --install frauddemo charts/frauddemo -n frauddemo \
	  --create-namespace -f tools/node/sample-values.yaml
	@echo "real-demo: KUBECONFIG=.cluster/kubeconfig .tools/bin/kubectl -n frauddemo get fd,pods -w"

real-demo-down:
	tools/node.sh down
	tools/cluster.sh down

# The real-pod tests alone (tests/cluster/test_real_pods.py, ~10 min); soak-real-pods soaks for 30 minutes
# at the sample's default rate instead of 3 (no restart, no OOM kill, store memory within its limit).
test-real-pods: $(STAMP) cluster-tools tools
	$(BIN)/python -m pytest -q -s tests/cluster/test_real_pods.py

soak-real-pods: $(STAMP) cluster-tools tools
	FRAUDDEMO_REAL_PODS_SOAK_S=1800 $(BIN)/python -m pytest -q -s tests/cluster/test_real_pods.py
