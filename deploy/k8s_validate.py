#!/usr/bin/env python3
"""Validate rendered Kubernetes manifests against the Kubernetes JSON schemas.

Usage: k8s_validate.py --kube-version 1.25 --kube-version 1.37 [--crd-models DIR] FILE...

Every document of every FILE is validated with kubernetes-validate in strict mode
(unknown fields are errors) for each Kubernetes version given. The prometheus-operator
custom resources (ServiceMonitor, PrometheusRule), for which kubernetes-validate has no
schema, are validated by deploy/crd_validate.mjs with the JSON-schema validators of the npm
package @kubernetes-models/prometheus-operator found under --crd-models. A kind with no
schema anywhere is a failure, never a skip. Exits non-zero on any failure or when a file
holds no documents at all.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import kubernetes_validate.utils as kv
import yaml


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kube-version", action="append", required=True)
    ap.add_argument("--crd-models", help="directory whose node_modules holds @kubernetes-models/prometheus-operator")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()

    failures = 0
    custom = []  # (path, doc) of kinds kubernetes-validate has no schema for
    for path in args.files:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        if not docs:
            print(f"  FAIL {path}: no manifests rendered")
            failures += 1
            continue
        for doc in docs:
            name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')} ({doc.get('apiVersion')})"
            valid, skipped, errors = [], None, []
            for version in args.kube_version:
                try:
                    valid.append(kv.validate(doc, version, strict=True))
                except kv.SchemaNotFoundError as e:
                    skipped = e.message
                except kv.ValidationError as e:
                    where = "/".join(str(p) for p in e.path)
                    errors.append(f"Kubernetes {e.version}: {where}: {e.message}")
                except Exception as e:  # noqa: BLE001 - anything else is a failure too
                    errors.append(f"Kubernetes {version}: {type(e).__name__}: {e}")
            if errors:
                failures += 1
                for err in errors:
                    print(f"  FAIL {path}: {name}: {err}")
            elif skipped:
                custom.append((path, doc))
            else:
                print(f"  ok   {path}: {name}: valid (strict) for Kubernetes {', '.join(valid)}")
    if custom:
        failures += validate_custom(args.crd_models, custom)
    return 1 if failures else 0


CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}


def validate_custom(models, docs):
    """Kinds kubernetes-validate has no schema for: the prometheus-operator ones go to
    crd_validate.mjs; anything else (or no validator at hand) fails."""
    failures = 0
    known = []
    for path, doc in docs:
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')} ({doc.get('apiVersion')})"
        if (doc.get("apiVersion"), doc.get("kind")) not in CRD_KINDS:
            print(f"  FAIL {path}: {name}: no schema for this kind (not in kubernetes-validate, not a known custom resource)")
            failures += 1
        elif not models:
            print(f"  FAIL {path}: {name}: custom resource, and no validator for it (--crd-models not given or not installed)")
            failures += 1
        else:
            known.append(doc)
    if known:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(known, f)
        try:
            script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "crd_validate.mjs")
            rc = subprocess.run(["node", script, models, f.name], timeout=60).returncode
        finally:
            os.unlink(f.name)
        if rc != 0:
            failures += 1
    return failures


if __name__ == "__main__":
    sys.exit(main())
