# Every target creates and uses .venv in the repository root.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install bench clean tools chart-crd dashboards

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/frauddemo up

test: $(STAMP) tools
	$(BIN)/python -m pytest -q

# The Grafana dashboard and Prometheus rules are generated from code (a test fails when stale).
dashboards: $(STAMP)
	$(BIN)/python dashboards/generate.py

bench: $(STAMP)
	$(BIN)/frauddemo bench replication --json

# The real tools the chart tests run (helm 3.18, the prometheus-operator's schemas), cached in .tools/.
TOOLS := .tools

$(TOOLS)/helm: tools/fetch_helm.py | $(STAMP)
	$(BIN)/python tools/fetch_helm.py $@

$(TOOLS)/prometheus-models/.installed: tools/fetch_prometheus_models.sh tools/prometheus-models/*
	tools/fetch_prometheus_models.sh

tools: $(TOOLS)/helm $(TOOLS)/prometheus-models/.installed

# helm reads only files inside the chart: this copies the CRD's single source there (a test fails when stale).
chart-crd:
	cp operator/frauddemo_operator/crd.yaml charts/frauddemo/crds/frauddemos.frauddemo.io.yaml

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
