#!/usr/bin/env python3
"""Validate rendered Kubernetes manifests against the Kubernetes JSON schemas.

Usage: k8s_validate.py --kube-version 1.25 --kube-version 1.37 FILE...

Every document of every FILE is validated with kubernetes-validate in strict mode
(unknown fields are errors) for each Kubernetes version given. Kinds it has no schema
for (custom resources such as the prometheus-operator ServiceMonitor) are reported as
skipped, not passed; any other error fails. Exits non-zero on any failure or when a file
holds no documents at all.
"""

import argparse
import sys

import kubernetes_validate.utils as kv
import yaml


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kube-version", action="append", required=True)
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()

    failures = 0
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
                print(f"  SKIP {path}: {name}: no schema in kubernetes-validate (custom resource): not validated")
            else:
                print(f"  ok   {path}: {name}: valid (strict) for Kubernetes {', '.join(valid)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
