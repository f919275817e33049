// Validate Kubernetes custom resources against their projects' published schemas, offline.
// stdin: a JSON array of manifests; stdout: a JSON array of {kind, name, ok, error}. Exit 0 even when some are invalid.
import { Rollout } from "@kubernetes-models/argo-rollouts/argoproj.io/v1alpha1/Rollout";
import { AnalysisTemplate } from "@kubernetes-models/argo-rollouts/argoproj.io/v1alpha1/AnalysisTemplate";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";

const models = {
  "argoproj.io/v1alpha1/Rollout": Rollout,
  "argoproj.io/v1alpha1/AnalysisTemplate": AnalysisTemplate,
  "monitoring.coreos.com/v1/ServiceMonitor": ServiceMonitor,
  "monitoring.coreos.com/v1/PrometheusRule": PrometheusRule,
};

let input = "";
for await (const chunk of process.stdin) input += chunk;
const results = JSON.parse(input).map((doc) => {
  const key = `${doc.apiVersion}/${doc.kind}`;
  const name = doc.metadata?.name;
  const Model = models[key];
  if (!Model) return { kind: key, name, ok: false, error: "no schema known for this kind" };
  try {
    new Model(doc).validate();
    return { kind: key, name, ok: true };
  } catch (err) {
    return { kind: key, name, ok: false, error: String(err.message || err) };
  }
});
process.stdout.write(JSON.stringify(results));
