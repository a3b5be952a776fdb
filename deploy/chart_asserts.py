#!/usr/bin/env python3
"""Named assertions on one rendered chart, for the checks of deploy/test.sh that say what a
feature must look like (check_static.py manifests covers every render more broadly).

  chart_asserts.py admin MANIFESTS.yaml       the admin listener split
  chart_asserts.py demo-off MANIFESTS.yaml    DEMO_PAGE=false
  chart_asserts.py demo-on MANIFESTS.yaml     DEMO_PAGE=true
  chart_asserts.py auth-file MANIFESTS.yaml [SECRET]
                                              the HS256 secret as a mounted file (JWT_SECRET_FILE),
                                              from the Secret named SECRET (default: the chart's)
  chart_asserts.py redis-password MANIFESTS.yaml [SECRET]
                                              the bundled Redis requires a password, which the
                                              gateway reads from a file (REDIS_PASSWORD_FILE)
  chart_asserts.py netpol MANIFESTS.yaml      NetworkPolicies: Redis from the gateway only, the
                                              admin port from the named peers, public from anywhere
  chart_asserts.py no-netpol MANIFESTS.yaml   no NetworkPolicy rendered
  chart_asserts.py no-secret-checksum MANIFESTS.yaml [TOKEN]
                                              no pod annotation derived from Secret content;
                                              rollout/token = TOKEN when given
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


def redis_password(by, secret_name=None):
    import base64
    dep, pod, c = container(by)
    name = dep["metadata"]["name"]
    env = {e["name"]: e for e in c.get("env", [])}
    url = env.get("REDIS_URL", {}).get("value")
    check(url == f"redis://{name}-redis:6379", f"REDIS_URL={url} (the bundled Service, no password in it)")
    path = env.get("REDIS_PASSWORD_FILE", {}).get("value", "")
    src = mounted_file(pod, c, path)
    want = secret_name or name
    check(src is not None and src[0] == want, f"REDIS_PASSWORD_FILE {path!r} is mounted from Secret {src} (want {want})")
    rd = by["Deployment"].get(f"{name}-redis")
    check(rd is not None, f"bundled Redis Deployment {name}-redis")
    if not rd:
        return
    rc = rd["spec"]["template"]["spec"]["containers"][0]
    cmd = " ".join(rc.get("command", []) + rc.get("args", []))
    check("--requirepass" in cmd, "bundled Redis runs with --requirepass")
    renv = {e["name"]: e for e in rc.get("env", [])}
    ref = renv.get("REDIS_PASSWORD", {}).get("valueFrom", {}).get("secretKeyRef", {})
    check(src is not None and (ref.get("name"), ref.get("key")) == tuple(src),
          f"Redis's requirepass and the gateway's file come from the same Secret key ({ref})")
    probe = renv.get("REDISCLI_AUTH", {}).get("valueFrom", {}).get("secretKeyRef", {})
    check(bool(ref) and probe == ref, "the readiness probe's redis-cli authenticates (REDISCLI_AUTH)")
    rcmd = " ".join(rc.get("readinessProbe", {}).get("exec", {}).get("command", []))
    check("PONG" in rcmd, f"the readiness probe requires PONG (redis-cli exits 0 on NOAUTH too): {rcmd!r}")
    if src and src[0] in by.get("Secret", {}):
        pw = base64.b64decode(by["Secret"][src[0]]["data"][src[1]]).decode()
        check(len(pw) >= 32, f"the rendered Redis password is {len(pw)} characters (a generated one is 32)")


def policies(by):
    return list(by.get("NetworkPolicy", {}).values())


def netpol(by):
    dep, pod, c = container(by)
    name = dep["metadata"]["name"]
    gw_labels = dep["spec"]["selector"]["matchLabels"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    nps = policies(by)
    gw = [n for n in nps if n["spec"]["podSelector"].get("matchLabels") == gw_labels]
    check(len(gw) == 1, f"one NetworkPolicy selects the gateway pods ({[n['metadata']['name'] for n in gw]})")
    if gw:
        spec = gw[0]["spec"]
        check(spec.get("policyTypes") == ["Ingress"], f"gateway policy restricts ingress ({spec.get('policyTypes')})")
        rules = spec.get("ingress", [])
        by_port = {}
        for r in rules:
            for p in r.get("ports", []):
                by_port.setdefault(p["port"], []).append(r)
        pub = by_port.get(ports["http"], [])
        check(len(pub) == 1 and "from" not in pub[0], f"public port {ports['http']}: from anywhere (the ingress controller)")
        adm = by_port.get(ports["admin"], [])
        check(len(adm) == 1 and bool(adm[0].get("from")),
              f"admin port {ports['admin']}: only from the named peers ({adm[0].get('from') if adm else None})")
        check(all(r.get("ports") for r in rules), "every gateway rule names its ports (no rule opens all ports)")
        check(set(by_port) == {ports["http"], ports["admin"]}, f"no other port is opened ({sorted(by_port)})")
    rd = by.get("Deployment", {}).get(f"{name}-redis")
    if rd:
        rl = rd["spec"]["selector"]["matchLabels"]
        rp = [n for n in nps if n["spec"]["podSelector"].get("matchLabels") == rl]
        check(len(rp) == 1, "one NetworkPolicy selects the bundled Redis")
        if rp:
            spec = rp[0]["spec"]
            rules = spec.get("ingress", [])
            froms = [f for r in rules for f in r.get("from", [])]
            check(spec.get("policyTypes") == ["Ingress"] and len(rules) == 1
                  and froms == [{"podSelector": {"matchLabels": gw_labels}}]
                  and [p["port"] for p in rules[0].get("ports", [])] == [6379],
                  f"Redis accepts only the gateway pods, on 6379 ({rules})")


def no_netpol(by):
    check(not policies(by), f"no NetworkPolicy ({[n['metadata']['name'] for n in policies(by)]})")


def no_secret_checksum(by, token=None):
    import re
    for d in by.get("Deployment", {}).values():
        ann = d["spec"]["template"]["metadata"].get("annotations") or {}
        bad = [k for k in ann if "secret" in k.lower()]
        check(not bad, f"{d['metadata']['name']}: no secret checksum annotation ({bad})")
        hashes = [k for k, v in ann.items() if re.fullmatch(r"[0-9a-f]{64}", str(v)) and k != "checksum/config"]
        check(not hashes, f"{d['metadata']['name']}: no other hash-like annotation ({hashes})")
        if token is not None:
            check(ann.get("rollout/token") == token, f"{d['metadata']['name']}: rollout/token={ann.get('rollout/token')!r}")


def main():
    cmd, path = sys.argv[1], sys.argv[2]
    by = load(path)
    extra = sys.argv[3:]
    simple = {"redis-password": lambda: redis_password(by, *extra), "netpol": lambda: netpol(by),
              "no-netpol": lambda: no_netpol(by), "no-secret-checksum": lambda: no_secret_checksum(by, *extra)}
    if cmd in simple:
        simple[cmd]()
        sys.exit(1 if FAILED else 0)
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
