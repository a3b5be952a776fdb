#!/usr/bin/env python3
"""Named assertions on one rendered chart, for the checks of deploy/test.sh that say what a
feature must look like (check_static.py manifests covers every render more broadly).

  chart_asserts.py admin MANIFESTS.yaml       the admin listener split
  chart_asserts.py demo-off MANIFESTS.yaml    DEMO_PAGE=false
  chart_asserts.py demo-on MANIFESTS.yaml     DEMO_PAGE=true
  chart_asserts.py auth-file MANIFESTS.yaml [SECRET]
                                              the HS256 secret as a mounted file (JWT_SECRET_FILE),
                                              from the Secret named SECRET (default: the chart's)
  chart_asserts.py auth-jwks MANIFESTS.yaml URL REFRESH
                                              JWT_JWKS_URL/JWKS_REFRESH_SECS, no secret key at all

Prints one line per assertion; exits 1 if any fails.
"""

import sys

import yaml

FAILED = []


def check(ok, what):
    print(f"  {'ok  ' if ok else 'FAIL'} {what}")
    if not ok:
        FAILED.append(what)


def load(path):
    by = {}
    for d in yaml.safe_load_all(open(path)):
        if d:
            by.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    return by


def gateway(by):
    return next(d for d in by.get("Deployment", {}).values()
                if d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == "gateway")


def configmap_env(by, c):
    out = {}
    for ef in c.get("envFrom", []):
        if "configMapRef" in ef:
            out.update(by["ConfigMap"][ef["configMapRef"]["name"]].get("data") or {})
    return out


def admin(by):
    dep = gateway(by)
    c = dep["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    name = dep["metadata"]["name"]
    check("admin" in ports, f"container port admin ({ports})")
    check(env.get("ADMIN_LISTEN_ADDR") == f"0.0.0.0:{ports.get('admin')}",
          f"ADMIN_LISTEN_ADDR=0.0.0.0:{ports.get('admin')} ({env.get('ADMIN_LISTEN_ADDR')})")
    for probe in ("livenessProbe", "readinessProbe"):
        check(c[probe]["httpGet"]["port"] == "http", f"{probe} {c[probe]['httpGet']['path']} on the public port http")
    svcs = by.get("Service", {})
    pub, adm = svcs.get(name), svcs.get(f"{name}-admin")
    check(pub is not None and [p["name"] for p in pub["spec"]["ports"]] == ["http"],
          f"public Service {name}: port http only")
    check(adm is not None and adm["spec"].get("type", "ClusterIP") == "ClusterIP"
          and [(p["name"], p["targetPort"]) for p in adm["spec"]["ports"]] == [("admin", "admin")],
          f"internal Service {name}-admin: ClusterIP, port admin only")
    ings = list(by.get("Ingress", {}).values())
    check(bool(ings), "an Ingress is rendered (these values enable it)")
    for ing in ings:
        for rule in ing["spec"]["rules"]:
            for p in rule["http"]["paths"]:
                be = p["backend"]["service"]
                check(be["name"] == name and be["port"] == {"name": "http"},
                      f"Ingress {p['path']} -> {be['name']}:{be['port']} (the public Service, port http)")
    sms = list(by.get("ServiceMonitor", {}).values())
    check(bool(sms), "a ServiceMonitor is rendered (these values enable it)")
    for sm in sms:
        ports = [ep.get("port") for ep in sm["spec"]["endpoints"]]
        check(ports == ["admin"], f"ServiceMonitor scrapes port {ports} (admin)")
        ml = sm["spec"]["selector"]["matchLabels"]
        hits = [s["metadata"]["name"] for s in svcs.values()
                if all(s["metadata"].get("labels", {}).get(k) == v for k, v in ml.items())]
        check(hits == [f"{name}-admin"], f"ServiceMonitor selects {hits} (only {name}-admin)")


def demo(by, want):
    c = gateway(by)["spec"]["template"]["spec"]["containers"][0]
    v = configmap_env(by, c).get("DEMO_PAGE")
    check(v == want, f"DEMO_PAGE={v!r} (want {want!r})")


def container(by):
    dep = gateway(by)
    pod = dep["spec"]["template"]["spec"]
    return dep, pod, pod["containers"][0]


def mounted_file(pod, c, path):
    """The (secret name, key) a file path in the container comes from, or None."""
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    for m in c.get("volumeMounts", []):
        base = m["mountPath"].rstrip("/") + "/"
        if not path.startswith(base):
            continue
        rel = path[len(base):]
        v = vols.get(m["name"], {})
        sources = [{"secret": v["secret"]}] if "secret" in v else v.get("projected", {}).get("sources", [])
        for src in sources:
            sec = src.get("secret")
            if not sec:
                continue
            name = sec.get("secretName", sec.get("name"))
            for item in sec.get("items", []):
                if item["path"] == rel:
                    return name, item["key"]
    return None


def key_envs(c):
    names = ("JWT_SECRET", "JWT_SECRET_FILE", "JWT_PUBLIC_KEY_FILE", "JWT_JWKS_URL")
    return {e["name"]: e for e in c.get("env", []) if e["name"] in names}


def auth_file(by, secret_name=None):
    dep, pod, c = container(by)
    envs = key_envs(c)
    check(list(envs) == ["JWT_SECRET_FILE"], f"the only key setting is JWT_SECRET_FILE ({sorted(envs)})")
    check("JWT_SECRET" not in envs, "no JWT_SECRET in the environment (readable by anyone who can read the pod's env)")
    path = envs.get("JWT_SECRET_FILE", {}).get("value", "")
    src = mounted_file(pod, c, path)
    want = secret_name or dep["metadata"]["name"]
    check(src is not None and src[0] == want, f"JWT_SECRET_FILE {path} is mounted from Secret {src} (want {want})")
    if src and src[0] in by.get("Secret", {}):
        import base64
        value = base64.b64decode(by["Secret"][src[0]]["data"][src[1]])
        check(len(value) >= 32, f"the rendered secret is {len(value)} bytes (>= 32, the gateway's minimum)")


def auth_jwks(by, url, refresh):
    dep, pod, c = container(by)
    envs = key_envs(c)
    check(list(envs) == ["JWT_JWKS_URL"], f"the only key setting is JWT_JWKS_URL ({sorted(envs)})")
    check(envs.get("JWT_JWKS_URL", {}).get("value") == url, f"JWT_JWKS_URL={envs.get('JWT_JWKS_URL', {}).get('value')}")
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    check(env.get("JWKS_REFRESH_SECS") == refresh, f"JWKS_REFRESH_SECS={env.get('JWKS_REFRESH_SECS')} (want {refresh})")
    keys = [k for s in by.get("Secret", {}).values() for k in (s.get("data") or {}) if k.startswith("jwt")]
    check(not keys, f"no JWT key in any rendered Secret ({keys})")


def main():
    cmd, path = sys.argv[1], sys.argv[2]
    by = load(path)
    if cmd == "auth-file":
        auth_file(by, sys.argv[3] if len(sys.argv) > 3 else None)
        sys.exit(1 if FAILED else 0)
    if cmd == "auth-jwks":
        auth_jwks(by, sys.argv[3], sys.argv[4])
        sys.exit(1 if FAILED else 0)
    if cmd == "admin":
        admin(by)
    elif cmd == "demo-off":
        demo(by, "false")
    elif cmd == "demo-on":
        demo(by, "true")
    else:
        sys.exit(f"unknown command {cmd}")
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
