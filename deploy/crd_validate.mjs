// Validates prometheus-operator custom resources (ServiceMonitor, PrometheusRule) with the
// JSON-schema validators of the npm package @kubernetes-models/prometheus-operator, which are
// generated from prometheus-operator's API types: types, required fields, enums and formats
// (durations, ...). Unknown fields are not reported by these validators.
//
//   node deploy/crd_validate.mjs MODELS_DIR DOCS.json
//
// MODELS_DIR holds node_modules/@kubernetes-models/prometheus-operator (deploy/test.sh
// installs it under deploy/.tools/crd). DOCS.json is a JSON array of manifests. Prints one
// line per document; exits 1 if any is invalid or of a kind it has no validator for.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [modelsDir, docsPath] = process.argv.slice(2);
if (!modelsDir || !docsPath) {
  console.error("usage: crd_validate.mjs MODELS_DIR DOCS.json");
  process.exit(2);
}
const pkg = join(modelsDir, "node_modules", "@kubernetes-models", "prometheus-operator");
const KINDS = {
  "monitoring.coreos.com/v1 ServiceMonitor": "monitoring.coreos.com/v1/ServiceMonitor.js",
  "monitoring.coreos.com/v1 PrometheusRule": "monitoring.coreos.com/v1/PrometheusRule.js",
};
const version = JSON.parse(readFileSync(join(pkg, "package.json"), "utf8")).version;
let failures = 0;
for (const doc of JSON.parse(readFileSync(docsPath, "utf8"))) {
  const key = `${doc.apiVersion} ${doc.kind}`;
  const name = `${doc.kind}/${doc.metadata?.name} (${doc.apiVersion})`;
  const file = KINDS[key];
  if (!file) {
    console.log(`  FAIL ${name}: no validator for this kind`);
    failures++;
    continue;
  }
  const mod = await import(pathToFileURL(join(pkg, file)).href);
  const Model = mod[doc.kind];
  try {
    new Model(doc).validate();
    console.log(`  ok   ${name}: valid for @kubernetes-models/prometheus-operator ${version} (unknown fields not checked)`);
  } catch (e) {
    console.log(`  FAIL ${name}: ${e.message}`);
    failures++;
  }
}
process.exit(failures ? 1 : 0);
