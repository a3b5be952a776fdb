# wsgate container image.
#
#   docker build -t wsgate:local .
#   docker run --rm -p 8000:8000 -e JWT_SECRET=$(openssl rand -base64 48) wsgate:local
#
# Two stages: a Rust builder (rust:1-bookworm) and a small Debian runtime
# (debian:bookworm-slim) built on the same Debian release, so the glibc the binary was
# linked against is the one it runs on.

############################ builder ############################
FROM rust:1-bookworm AS builder
WORKDIR /src

# 1. Dependency layer. Only the manifests and the lock file are copied, with stub
#    sources, so this (slow) layer is rebuilt only when Cargo.toml/Cargo.lock change,
#    not on every source edit. benches/loadgen is a workspace member, so its manifest
#    must be there for cargo to read the workspace (--locked checks the whole lock file);
#    only the wsgate package is built.
COPY Cargo.toml Cargo.lock ./
COPY benches/loadgen/Cargo.toml benches/loadgen/Cargo.toml
RUN mkdir -p src benches/loadgen/src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && echo 'fn main() {}' > benches/loadgen/src/main.rs \
    && cargo build --release --locked -p wsgate \
    && rm -rf src target/release/wsgate* target/release/libwsgate* \
       target/release/deps/wsgate-* target/release/deps/libwsgate-* \
       target/release/.fingerprint/wsgate-*

# 2. The real sources. clients/ is compiled in (src/http.rs include_str!s the demo page
#    and the JS client). The stub's fingerprints were removed above, so cargo rebuilds
#    the wsgate crate whatever the copied files' modification times are.
COPY src ./src
COPY clients ./clients
RUN cargo build --release --locked -p wsgate \
    && install -D -m 0755 target/release/wsgate /out/wsgate

############################ runtime ############################
FROM debian:bookworm-slim AS runtime

# ca-certificates: rediss:// (TLS to Redis) verifies servers against the system CA store.
# curl: for the HEALTHCHECK below (curl -f gives a plain pass/fail on the HTTP status and
#   --max-time bounds it; about 6 MB with its libraries, and handy for debugging inside
#   the container). Kubernetes probes use httpGet and do not need it.
# Versions are not pinned: the security updates of bookworm should flow in on rebuilds.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*

# A fixed, numeric non-root user: Kubernetes can only verify runAsNonRoot for a numeric
# USER, and the Helm chart uses the same ids (runAsUser/runAsGroup 10001).
RUN groupadd --system --gid 10001 wsgate \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin wsgate

COPY --from=builder /out/wsgate /usr/local/bin/wsgate

# Container defaults; every other setting keeps the binary's default (README "Settings").
# JWT_SECRET / JWT_PUBLIC_KEY_FILE and REDIS_URL are given at run time, never baked in.
ENV LISTEN_ADDR=0.0.0.0:8000 \
    LOG_FORMAT=json

USER 10001:10001
EXPOSE 8000

# SIGTERM starts the drain: /ready turns 503, sockets get close 1001, exit 0 within
# DRAIN_TIMEOUT_MS (default 10 s). Give the container more than that to stop
# (docker stop -t 15, compose stop_grace_period, k8s terminationGracePeriodSeconds).
# The binary is PID 1 (exec form ENTRYPOINT) and handles SIGTERM/SIGINT itself; it starts
# no child processes, so no init is needed to reap zombies.
STOPSIGNAL SIGTERM

# The port is taken from LISTEN_ADDR, so the check follows a changed listener
# (LISTEN_ADDR=0.0.0.0:9000 -> http://127.0.0.1:9000/live).
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/bin/sh", "-c", "curl -fsS --max-time 2 -o /dev/null \"http://127.0.0.1:${LISTEN_ADDR##*:}/live\" || exit 1"]

ENTRYPOINT ["/usr/local/bin/wsgate"]
