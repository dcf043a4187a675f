// Validates prometheus-operator objects (ServiceMonitor, PrometheusRule) with the schemas that
// @kubernetes-models/prometheus-operator generates from the operator's Go types.
// stdin: a JSON array of objects; stdout: a JSON array of {kind, name, error} (error null when valid).
import { readFileSync } from "node:fs";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";

const MODELS = { ServiceMonitor, PrometheusRule };
const results = JSON.parse(readFileSync(0, "utf8")).map((obj) => {
  const Model = MODELS[obj.kind];
  const name = obj.metadata?.name ?? null;
  if (obj.apiVersion !== "monitoring.coreos.com/v1" || !Model) {
    return { kind: obj.kind, name, error: `no schema here for ${obj.apiVersion} ${obj.kind}` };
  }
  try {
    new Model(obj).validate();
    return { kind: obj.kind, name, error: null };
  } catch (e) {
    return { kind: obj.kind, name, error: e.message };
  }
});
process.stdout.write(JSON.stringify(results));
