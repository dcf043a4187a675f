#!/usr/bin/env bash
# Regenerates dashboard.schema.json, the JSON schema tests/test_dashboard.py validates the dashboard
# against, from the TypeScript types Grafana publishes in npm @grafana/schema. Dev time only (needs
# node and npm); the output is checked in, so tests and CI need neither.
#
#   bash dashboards/schema/regenerate.sh [GRAFANA_SCHEMA_VERSION]
set -euo pipefail
version="${1:-13.2.3}"
generator="ts-json-schema-generator@2.4.0"
out="$(cd "$(dirname "$0")" && pwd)/dashboard.schema.json"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
npm init -y >/dev/null
npm install --silent --no-audit --no-fund "@grafana/schema@$version" "$generator"
# Objects are closed (additionalProperties: false), as the TypeScript interfaces are: a misspelt
# key fails validation instead of being ignored by Grafana.
npx ts-json-schema-generator --no-type-check --type Dashboard \
  --path node_modules/@grafana/schema/dist/types/raw/dashboard/x/types.gen.d.ts -o raw.json
node -e '
const fs = require("fs");
const s = JSON.parse(fs.readFileSync("raw.json"));
const head = {$comment: `Generated from npm @grafana/schema@${process.argv[1]} (dist/types/raw/dashboard/x/types.gen.d.ts, type Dashboard) by ${process.argv[2]} via dashboards/schema/regenerate.sh; do not edit.`};
fs.writeFileSync(process.argv[3], JSON.stringify({...head, ...s}, null, 2) + "\n");
' "$version" "$generator" "$out"
echo "wrote $out"
