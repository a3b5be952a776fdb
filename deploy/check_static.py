#!/usr/bin/env python3
"""Static checks of the deployment files that no linter or schema covers.

  check_static.py dockerfile              Dockerfile + .dockerignore vs. what the build needs
  check_static.py compose CONFIG.yml      docker-compose.yml (raw) and its resolved form
                                          (`docker-compose config` output, or the raw file)
  check_static.py nginx                   deploy/nginx.conf vs. docker-compose.yml
  check_static.py manifests FILE [UID]    rendered Helm manifests: cross-references and the
                                          drain/probe/security settings (UID: the image's USER)

Run from the repository root. Prints one line per check; exits non-zero if any fails.
"""

import base64
import os
import re
import sys

import yaml

FAILED = []


def check(ok, what):
    print(f"  {'ok  ' if ok else 'FAIL'} {what}")
    if not ok:
        FAILED.append(what)
    return ok


# --------------------------------------------------------------------------- helpers

def duration_ms(v):
    """Compose durations ("15s", "1m30s", "500ms") and plain numbers (ms) to milliseconds."""
    if isinstance(v, (int, float)):
        return int(v)
    total, pos = 0, 0
    for m in re.finditer(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", v):
        n, unit = float(m.group(1)), m.group(2)
        total += n * {"h": 3600000, "m": 60000, "s": 1000, "ms": 1, "us": 0.001}[unit]
        pos = m.end()
    if pos != len(v):
        raise ValueError(f"not a duration: {v!r}")
    return int(total)


def env_map(env):
    if isinstance(env, dict):
        return {k: ("" if v is None else str(v)) for k, v in env.items()}
    out = {}
    for item in env or []:
        k, _, v = item.partition("=")
        out[k] = v
    return out


def dockerignore_patterns(path=".dockerignore"):
    pats = []
    for line in open(path):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        neg = line.startswith("!")
        if neg:
            line = line[1:].strip()
        line = os.path.normpath(line.strip("/"))
        pats.append((neg, pattern_regex(line)))
    return pats


def pattern_regex(pat):
    """Docker's .dockerignore syntax (Go filepath.Match plus **) as a regular expression."""
    out, i = "", 0
    while i < len(pat):
        c = pat[i]
        if pat.startswith("**", i):
            i += 2
            if pat.startswith("/", i):
                i += 1
                out += "(?:.*/)?"
            else:
                out += ".*"
            continue
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            j = pat.index("]", i)
            out += "[" + pat[i + 1:j].replace("!", "^", 1) + "]"
            i = j
        else:
            out += re.escape(c)
        i += 1
    return re.compile("^" + out + "$")


def ignored(rel, pats):
    """Whether Docker leaves `rel` out of the build context: the last pattern that matches
    the path or one of its parent directories decides."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    result = False
    for neg, rx in pats:
        if any(rx.match(p) for p in prefixes):
            result = not neg
    return result


# --------------------------------------------------------------------------- Dockerfile

def cmd_dockerfile():
    text = open("Dockerfile").read()
    # join continuation lines
    logical = re.sub(r"\\\n", " ", text)
    lines = [ln.strip() for ln in logical.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    froms = [ln for ln in lines if ln.upper().startswith("FROM ")]
    check(len(froms) == 2, f"two stages (found {len(froms)} FROM lines)")
    # Every base image pinned by digest: FROM image:tag@sha256:<64 hex>. The tag says what it
    # is, the digest what it is exactly (a tag moves).
    pinned = re.compile(r"^FROM\s+(\S+):([\w][\w.-]*)@sha256:[0-9a-f]{64}(\s+AS\s+\w+)?$", re.I)
    for f in froms:
        check(pinned.match(f) is not None, f"base image pinned by digest (image:tag@sha256:...): {f.split()[1][:60]}...")
    image = lambda f: f.split()[1].split("@")[0] if f else ""
    check(bool(froms) and re.match(r"rust:1\.\d+(\.\d+)?-bookworm$", image(froms[0])) is not None
          and re.search(r"\bAS builder$", froms[0], re.I) is not None,
          f"builder stage is a versioned rust:1.x-bookworm ({image(froms[0]) if froms else ''})")
    check(len(froms) > 1 and image(froms[-1]).startswith("gcr.io/distroless/cc-debian12:"),
          f"runtime stage is distroless cc-debian12: glibc, libgcc, CA certificates, no shell ({image(froms[-1]) if froms else ''})")
    builds = [ln for ln in lines if "cargo build" in ln]
    check(len(builds) == 2 and all("--release" in b and "--locked" in b and "-p wsgate" in b for b in builds),
          "dependency layer + real build, both `cargo build --release --locked -p wsgate`")
    rt = logical.split(froms[-1], 1)[1] if froms else ""
    rt_lines = [ln for ln in lines if ln in rt]
    check(not any(ln.upper().startswith("RUN ") for ln in rt_lines), "runtime stage has no RUN (there is no shell to run it)")
    check(not re.search(r"\b(curl|wget|busybox|/bin/sh|bash)\b", " ".join(ln for ln in rt_lines if not ln.startswith("#"))),
          "runtime stage brings no curl, wget, busybox or shell")
    copied = [ln.split()[-1] for ln in rt_lines if ln.upper().startswith("COPY ")]
    check(sorted(copied) == ["/bin/sleep", "/usr/local/bin/wsgate"],
          f"runtime gets exactly the wsgate binary and /bin/sleep (for the chart's exec preStop) ({copied})")
    m = re.search(r"^USER\s+(\S+)", rt, re.M)
    user = m.group(1) if m else ""
    check(bool(re.match(r"^[1-9]\d*(:\d+)?$", user)), f"runtime USER is a numeric non-root uid ({user!r})")
    check(re.search(r"^EXPOSE\s+8000\b", rt, re.M) is not None, "EXPOSE 8000")
    check(re.search(r"^STOPSIGNAL\s+SIGTERM\b", rt, re.M) is not None, "STOPSIGNAL SIGTERM")
    hc = re.search(r"^HEALTHCHECK\s+(.*)$", rt, re.M)
    check(hc is None or hc.group(1).strip().upper() == "NONE" or (
        "CMD" in hc.group(1) and "/usr/local/bin/wsgate" in hc.group(1) and "sh" not in hc.group(1).split()),
        "no HEALTHCHECK needing a shell or curl (the image has neither; orchestrators probe /live)")
    check(re.search(r"^ENV\s.*LOG_FORMAT=json", rt, re.M) is not None, "LOG_FORMAT=json by default")
    check(re.search(r'^ENTRYPOINT\s+\["', rt, re.M) is not None,
          "exec-form ENTRYPOINT (the binary is PID 1 and gets SIGTERM itself)")

    # The build context: everything COPY'd from it must be there and not .dockerignored.
    pats = dockerignore_patterns()
    copies = []
    for ln in lines:
        if ln.upper().startswith("COPY ") and "--from=" not in ln:
            args = ln.split()[1:]
            copies.extend(a for a in args[:-1] if not a.startswith("--"))
    for src in copies:
        check(os.path.exists(src) and not ignored(os.path.normpath(src), pats),
              f"COPY {src}: present and not excluded by .dockerignore")
    copied_dirs = [os.path.normpath(c) for c in copies if os.path.isdir(c)]
    # Files the Rust sources embed at compile time must be inside what is copied.
    for dirpath, _, files in os.walk("src"):
        for fn in files:
            if not fn.endswith(".rs"):
                continue
            p = os.path.join(dirpath, fn)
            for m in re.finditer(r'include_(?:str|bytes)!\(\s*"([^"]+)"', open(p).read()):
                target = os.path.normpath(os.path.join(dirpath, m.group(1)))
                inside = any(target == d or target.startswith(d + "/") for d in copied_dirs)
                check(inside and os.path.exists(target) and not ignored(target, pats),
                      f"{p} embeds {target}: copied into the builder and not .dockerignored")
    for rel in ["target/release/wsgate", ".git/HEAD", "clients/js/node_modules/x/index.js",
                "deploy/.tools/helm", "bench-results/x.json", "tests/auth.rs", ".env"]:
        check(ignored(rel, pats), f".dockerignore keeps {rel} out of the build context")
    return user


# --------------------------------------------------------------------------- compose

def cmd_compose(resolved_path):
    raw = yaml.safe_load(open("docker-compose.yml"))
    cfg = yaml.safe_load(open(resolved_path))
    svcs = cfg.get("services", {})
    gw = sorted(n for n, s in svcs.items() if isinstance(s.get("build"), (dict, str)))
    check(gw == ["wsgate1", "wsgate2", "wsgate3"], f"three wsgate instances built from the Dockerfile ({gw})")
    check("redis" in svcs and svcs["redis"].get("image") == "redis:7-alpine", "redis service uses redis:7-alpine")
    rhc = " ".join(map(str, (svcs.get("redis", {}).get("healthcheck") or {}).get("test", [])))
    check("redis-cli" in rhc and "ping" in rhc, f"redis healthcheck is `redis-cli ping` ({rhc!r})")

    raw_env = env_map(raw["x-wsgate-env"]) if "x-wsgate-env" in raw else {}
    check(re.fullmatch(r"\$\{JWT_SECRET:-[^}]+\}", raw_env.get("JWT_SECRET", "")) is not None,
          "JWT_SECRET comes from the environment with a dev default (${JWT_SECRET:-...})")
    ids, secrets, host_ports = set(), set(), []
    for n in gw:
        s = svcs[n]
        b = s["build"] if isinstance(s["build"], dict) else {"context": s["build"]}
        ctx = os.path.normpath(os.path.join(os.getcwd(), b.get("context", ".")))
        check(ctx == os.getcwd() and b.get("dockerfile", "Dockerfile") in ("Dockerfile", os.path.join(ctx, "Dockerfile")),
              f"{n}: builds ./Dockerfile with the repository as context")
        env = env_map(s.get("environment"))
        check(env.get("REDIS_URL") == "redis://redis:6379", f"{n}: REDIS_URL=redis://redis:6379")
        ids.add(env.get("INSTANCE_ID"))
        secrets.add(env.get("JWT_SECRET"))
        check(bool(env.get("JWT_SECRET")), f"{n}: JWT_SECRET set")
        dep = s.get("depends_on", {})
        check(isinstance(dep, dict) and dep.get("redis", {}).get("condition") == "service_healthy",
              f"{n}: depends_on redis (service_healthy)")
        test = list(map(str, (s.get("healthcheck") or {}).get("test", [])))
        check(test[:1] == ["CMD"] and test[1:] == ["/usr/local/bin/wsgate", "stats"],
              f"{n}: healthcheck runs the binary itself (`wsgate stats`; no shell or curl in the image) ({test})")
        drain = int(env.get("DRAIN_TIMEOUT_MS", "10000"))
        grace = duration_ms(s.get("stop_grace_period", "10s"))
        check(grace > drain, f"{n}: stop_grace_period {grace} ms > DRAIN_TIMEOUT_MS {drain} ms")
        for p in s.get("ports", []):
            if isinstance(p, dict):
                host_ports.append((int(p.get("published")), int(p.get("target"))))
            else:
                parts = str(p).split(":")
                host_ports.append((int(parts[-2]), int(parts[-1])))
    check(len(ids) == 3 and None not in ids, f"distinct INSTANCE_IDs ({sorted(map(str, ids))})")
    check(len(secrets) == 1, "one JWT_SECRET shared by the three instances")
    check(sorted(host_ports) == [(8001, 8000), (8002, 8000), (8003, 8000)],
          f"instances published on 8001-8003 ({sorted(host_ports)})")

    lb = [n for n, s in svcs.items() if str(s.get("image", "")).startswith("nginx")]
    check(len(lb) == 1, f"one nginx load balancer ({lb})")
    if lb:
        s = svcs[lb[0]]
        ports = []
        for p in s.get("ports", []):
            if isinstance(p, dict):
                ports.append((int(p.get("published")), int(p.get("target"))))
            else:
                parts = str(p).split(":")
                ports.append((int(parts[-2]), int(parts[-1])))
        check((8000, 8000) in ports, f"{lb[0]}: published on 8000 ({ports})")
        vols = [v if isinstance(v, str) else f"{v.get('source')}:{v.get('target')}" for v in s.get("volumes", [])]
        check(any("deploy/nginx.conf" in v and "/etc/nginx/nginx.conf" in v for v in vols),
              f"{lb[0]}: mounts deploy/nginx.conf as /etc/nginx/nginx.conf")
        dep = s.get("depends_on", {})
        check(isinstance(dep, dict) and all(dep.get(n, {}).get("condition") == "service_healthy" for n in gw),
              f"{lb[0]}: starts after the three instances are healthy")


# --------------------------------------------------------------------------- nginx

def cmd_nginx():
    conf = open("deploy/nginx.conf").read()
    body = "\n".join(re.sub(r"#.*", "", ln) for ln in conf.splitlines())

    def has(rx, what):
        return check(re.search(rx, body, re.M) is not None, what)

    m = re.search(r"upstream\s+(\w+)\s*\{([^}]*)\}", body)
    servers = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", m.group(2), re.M) if m else []
    compose = yaml.safe_load(open("docker-compose.yml"))["services"]
    check(sorted(h for h, _ in servers) == ["wsgate1", "wsgate2", "wsgate3"] and all(p == "8000" for _, p in servers),
          f"upstream lists the three compose instances on :8000 ({servers})")
    check(all(h in compose for h, _ in servers), "upstream host names are compose service names")
    if m:
        has(r"proxy_pass\s+http://" + m.group(1) + r"\s*;", f"proxy_pass http://{m.group(1)}")
    has(r"^\s*listen\s+8000\s*;", "listens on 8000 (the lb container port)")
    has(r"map\s+\$http_upgrade\s+\$connection_upgrade\s*\{", "map $http_upgrade $connection_upgrade")
    has(r"proxy_http_version\s+1\.1\s*;", "proxy_http_version 1.1")
    has(r"proxy_set_header\s+Upgrade\s+\$http_upgrade\s*;", "proxy_set_header Upgrade $http_upgrade")
    has(r"proxy_set_header\s+Connection\s+\$connection_upgrade\s*;", "proxy_set_header Connection $connection_upgrade")
    has(r"proxy_read_timeout\s+3600s\s*;", "proxy_read_timeout 3600s")
    has(r"proxy_send_timeout\s+\d+[smh]?\s*;", "proxy_send_timeout set")
    has(r"proxy_buffering\s+off\s*;", "proxy_buffering off")
    has(r"proxy_set_header\s+X-Forwarded-For\s+\$proxy_add_x_forwarded_for\s*;", "X-Forwarded-For forwarded")
    fmts = re.findall(r"log_format\s+\w+\s+((?:'[^']*'\s*)+);", body)
    leaks = [v for v in ("$request ", "$request\"", "$request_uri", "$args", "$query_string", "$is_args")
             if any(v in f for f in fmts)]
    check(bool(fmts) and not leaks and re.search(r"access_log\s+\S+\s+\w+", body) is not None,
          "access log format leaves out the query string (?token= never logged)")


# --------------------------------------------------------------------------- manifests

# Served only on ADMIN_LISTEN_ADDR: the Ingress must not route any of them (even though the
# public port would not answer them, a route is an exposure waiting for a regression).
ADMIN_ONLY_PATHS = ["/metrics", "/ws/stats", "/health", "/api/channels", "/api/channels/x/presence",
                    "/api/users/x/disconnect", "/api/history", "/api/openapi.json"]


def ingress_matches(path, request_path):
    """Whether an Ingress path rule (Exact or Prefix, per element) takes request_path."""
    p, kind = path["path"], path.get("pathType", "Prefix")
    if kind == "Exact":
        return request_path == p
    p = p.rstrip("/")
    return p == "" or request_path == p or request_path.startswith(p + "/")


def cmd_manifests(manifest_path, expect_uid):
    docs = [d for d in yaml.safe_load_all(open(manifest_path)) if d]
    by = {}
    for d in docs:
        by.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    deps = by.get("Deployment", {})
    gw = [d for d in deps.values() if d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == "gateway"]
    if not check(len(gw) == 1, "one gateway Deployment"):
        return
    dep = gw[0]
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    sel = dep["spec"]["selector"]["matchLabels"]
    check(all(labels.get(k) == v for k, v in sel.items()), "Deployment selector matches its pod labels")

    check(c["livenessProbe"]["httpGet"]["path"] == "/live", "liveness probe: GET /live")
    check(c["readinessProbe"]["httpGet"]["path"] == "/ready", "readiness probe: GET /ready")
    port_names = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    check(port_names.get("http") == 8000, "container port http = 8000")
    check(isinstance(port_names.get("admin"), int) and port_names.get("admin") != 8000,
          f"container port admin = {port_names.get('admin')}")
    for probe in ("livenessProbe", "readinessProbe"):
        check(c[probe]["httpGet"]["port"] in ("http", 8000), f"{probe} on the public port ({c[probe]['httpGet']['port']})")
    for probe in ("livenessProbe", "readinessProbe"):
        check(c[probe]["httpGet"]["port"] in port_names or c[probe]["httpGet"]["port"] in port_names.values(),
              f"{probe} port exists on the container")

    cms = by.get("ConfigMap", {})
    secrets = by.get("Secret", {})
    env_from_cm = {}
    for ef in c.get("envFrom", []):
        if "configMapRef" in ef:
            name = ef["configMapRef"]["name"]
            check(name in cms, f"envFrom ConfigMap {name} is rendered")
            env_from_cm.update(cms.get(name, {}).get("data") or {})
    env = {e["name"]: e for e in c.get("env", [])}
    check(env.get("INSTANCE_ID", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name",
          "INSTANCE_ID = pod name (downward API)")
    check(env.get("ADMIN_LISTEN_ADDR", {}).get("value") == f"0.0.0.0:{port_names.get('admin')}",
          f"ADMIN_LISTEN_ADDR = 0.0.0.0:<admin container port> ({env.get('ADMIN_LISTEN_ADDR', {}).get('value')})")
    check(str(env_from_cm.get("DEMO_PAGE", "")).lower() in ("false", "true"),
          f"DEMO_PAGE set explicitly in the ConfigMap ({env_from_cm.get('DEMO_PAGE')!r}; the binary's default is on)")
    for name, e in env.items():
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            ext = ref["name"] not in secrets
            ok = ext or ref["key"] in (secrets[ref["name"]].get("data") or {})
            check(ok, f"env {name}: Secret {ref['name']} key {ref['key']} "
                      + ("(an existing Secret, not rendered)" if ext else "is rendered"))
    key_settings = [k for k in ("JWT_SECRET", "JWT_SECRET_FILE", "JWT_PUBLIC_KEY_FILE", "JWT_JWKS_URL") if k in env]
    check(len(key_settings) == 1 and key_settings != ["JWT_SECRET"],
          f"exactly one key source, and never JWT_SECRET in the environment ({key_settings})")
    mounts = [m["mountPath"] for m in c.get("volumeMounts", [])]
    for k in ("JWT_SECRET_FILE", "JWT_PUBLIC_KEY_FILE", "REDIS_PASSWORD_FILE"):
        if k in env:
            path = env[k]["value"]
            check(any(path.startswith(mp.rstrip("/") + "/") for mp in mounts), f"{k} {path} is mounted")
    if "JWT_JWKS_URL" in env:
        check(env["JWT_JWKS_URL"]["value"].startswith("https://"), f"JWT_JWKS_URL is https:// ({env['JWT_JWKS_URL']['value']})")
    for forbidden in ("REDIS_URL", "JWT_SECRET", "INSTANCE_ID", "ADMIN_LISTEN_ADDR"):
        check(forbidden not in env_from_cm, f"{forbidden} not in the ConfigMap")

    replicas = dep["spec"].get("replicas")
    hpas = by.get("HorizontalPodAutoscaler", {})
    if hpas:
        h = list(hpas.values())[0]
        check(replicas is None, "with an HPA the Deployment leaves replicas to it")
        check(h["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"], "HPA targets the gateway Deployment")
        check(h["spec"]["minReplicas"] >= 2, f"HPA minReplicas {h['spec']['minReplicas']} >= 2")
        replicas = h["spec"]["maxReplicas"]
    if (replicas or 1) > 1:
        check("REDIS_URL" in env, f"{replicas} pods share Redis (REDIS_URL set)")

    drain = int(env_from_cm.get("DRAIN_TIMEOUT_MS", "10000"))
    pre = c.get("lifecycle", {}).get("preStop", {})
    if "exec" in pre:
        cmd = pre["exec"]["command"]
        check(cmd[0] == "/bin/sleep" and len(cmd) == 2, f"preStop runs /bin/sleep ({cmd})")
        sleep_s = int(cmd[1])
    else:
        sleep_s = int(pre.get("sleep", {}).get("seconds", 0))
    check(sleep_s > 0, f"preStop sleeps {sleep_s} s before SIGTERM")
    grace = pod.get("terminationGracePeriodSeconds", 30)
    check(grace * 1000 > sleep_s * 1000 + drain,
          f"terminationGracePeriodSeconds {grace} s > preStop {sleep_s} s + DRAIN_TIMEOUT_MS {drain} ms")

    psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
    check(psc.get("runAsNonRoot") is True or csc.get("runAsNonRoot") is True, "runAsNonRoot")
    check(csc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem")
    check(csc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation false")
    check(csc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities drop ALL")
    uid = csc.get("runAsUser", psc.get("runAsUser"))
    if expect_uid:
        check(str(uid) == expect_uid.split(":")[0], f"runAsUser {uid} = the image's USER {expect_uid}")
    check(bool(c.get("resources", {}).get("requests")), "resource requests set")

    svcs = by.get("Service", {})
    gsvcs = [s for s in svcs.values() if all(labels.get(k) == v for k, v in s["spec"]["selector"].items())]
    check(len(gsvcs) == 2, f"two Services select the gateway pods, public and admin ({[s['metadata']['name'] for s in gsvcs]})")
    public = [s for s in gsvcs if [p["name"] for p in s["spec"]["ports"]] == ["http"]]
    admin = [s for s in gsvcs if [p["name"] for p in s["spec"]["ports"]] == ["admin"]]
    check(len(public) == 1, "the public Service exposes the http port only")
    check(len(admin) == 1 and admin[0]["spec"].get("type", "ClusterIP") == "ClusterIP"
          and admin[0]["metadata"]["name"].endswith("-admin"),
          "the admin Service (<fullname>-admin) is ClusterIP and exposes the admin port only")
    gsvc = public
    svc_ports = {p["name"]: p for p in public[0]["spec"]["ports"]} if public else {}
    admin_ports = {p["name"]: p for p in admin[0]["spec"]["ports"]} if admin else {}
    check(all(p["targetPort"] in port_names or p["targetPort"] in port_names.values()
              for p in list(svc_ports.values()) + list(admin_ports.values())),
          "Service targetPorts exist on the container")
    for pdb in by.get("PodDisruptionBudget", {}).values():
        check(pdb["spec"]["selector"]["matchLabels"] == sel, "PodDisruptionBudget selects the gateway pods")
    for ing in by.get("Ingress", {}).values():
        for rule in ing["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                be = path["backend"]["service"]
                check(bool(public) and be["name"] == public[0]["metadata"]["name"] and be["port"].get("name") == "http",
                      f"Ingress {rule.get('host')}{path['path']} -> the public Service, port http ({be['name']}:{be['port']})")
                hit = [a for a in ADMIN_ONLY_PATHS if ingress_matches(path, a)]
                check(not hit, f"Ingress {path['path']} ({path.get('pathType')}) routes no admin-only path ({hit})")
        ann = ing["metadata"].get("annotations", {})
        if ing["spec"].get("ingressClassName") == "nginx":
            for k in ("proxy-read-timeout", "proxy-send-timeout"):
                v = ann.get(f"nginx.ingress.kubernetes.io/{k}")
                check(v is not None and int(v) >= 3600, f"Ingress annotation {k} = {v}")
    for sm in by.get("ServiceMonitor", {}).values():
        ml = sm["spec"]["selector"]["matchLabels"]
        targets = [s for s in svcs.values() if all(s["metadata"].get("labels", {}).get(k) == v for k, v in ml.items())]
        check(len(targets) == 1 and bool(admin) and targets[0] is admin[0],
              "ServiceMonitor selects exactly the admin Service")
        for ep in sm["spec"]["endpoints"]:
            check(ep.get("port") == "admin" and ep.get("port") in admin_ports and ep.get("path") == "/metrics",
                  f"ServiceMonitor scrapes port {ep.get('port')} {ep.get('path')} (must be admin /metrics)")
    redis_deps = [d for d in deps.values() if d is not dep]
    for rd in redis_deps:
        rc = rd["spec"]["template"]["spec"]["containers"][0]
        check(rc["image"].startswith("redis:7"), f"bundled Redis image {rc['image']}")
        rsvc = [s for s in svcs.values() if s["spec"]["selector"] == rd["spec"]["selector"]["matchLabels"]]
        check(len(rsvc) == 1, "bundled Redis has its Service")
        if rsvc and "REDIS_URL" in env:
            url = env["REDIS_URL"].get("value", "")
            check(url == f"redis://{rsvc[0]['metadata']['name']}:6379",
                  f"REDIS_URL is the bundled Redis Service, with no password in it ({url})")
            check("REDIS_PASSWORD_FILE" in env, "the password reaches the gateway as REDIS_PASSWORD_FILE")


def main():
    cmd = sys.argv[1]
    if cmd == "dockerfile":
        user = cmd_dockerfile()
        if len(sys.argv) > 2:
            open(sys.argv[2], "w").write(user)
    elif cmd == "compose":
        cmd_compose(sys.argv[2])
    elif cmd == "nginx":
        cmd_nginx()
    elif cmd == "manifests":
        cmd_manifests(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "")
    else:
        sys.exit(f"unknown command {cmd}")
    if FAILED:
        print(f"  {len(FAILED)} check(s) failed")
        sys.exit(1)


if __name__ == "__main__":
    main()
