#!/usr/bin/env bash
# Installs tools/prometheus-models (the prometheus-operator's ServiceMonitor and PrometheusRule schemas,
# pinned by package-lock.json) into .tools/prometheus-models for the chart tests. Needs Node.js and npm.
# Cached: installs again only when the lock file changed.
set -euo pipefail
cd "$(dirname "$0")/.."
src=tools/prometheus-models
dest=.tools/prometheus-models
command -v npm >/dev/null || { echo "fetch_prometheus_models: needs Node.js and npm (e.g. apt-get install nodejs npm)" >&2; exit 1; }
if [ -f "$dest/.installed" ] && cmp -s "$src/package-lock.json" "$dest/.installed"; then
  cp "$src/validate.mjs" "$dest/"
  touch "$dest/.installed"
  exit 0
fi
rm -rf "$dest"
mkdir -p "$dest"
cp "$src/package.json" "$src/package-lock.json" "$src/validate.mjs" "$dest/"
# The packages declare node >= 22 but run on the node 20 these machines have; npm only warns.
(cd "$dest" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
cp "$src/package-lock.json" "$dest/.installed"
echo "prometheus-operator schemas installed in $dest"
