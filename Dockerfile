# wsgate container image.
#
#   docker build -t wsgate:local .
#   docker run --rm -p 8000:8000 -e JWT_SECRET=$(openssl rand -base64 48) wsgate:local
#
# Two stages: a Rust builder (rust:1.96.0-bookworm) and a distroless runtime
# (gcr.io/distroless/cc-debian12: glibc, libgcc, CA certificates, tzdata; no shell, no
# package manager, no curl) on the same Debian release, so the glibc the binary was linked
# against is the one it runs on.
#
# Both base images are pinned by digest (a tag alone moves). The digests were not resolved
# on the machine that wrote this file (no registry access there); they are the ones
# Renovate pinned for these tags in takumi3488/simple-line-notice's Dockerfile (commit
# d71124af86452cff9d1d5255243017927ee4065b, June 2026), and the rust one is seen with
# rust:1.96-bookworm / rust:1.96.0-bookworm in other public repositories too. Verify and
# refresh them with `docker buildx imagetools inspect IMAGE:TAG` (deploy/README.md).

############################ builder ############################
FROM rust:1.96.0-bookworm@sha256:5e2214abe154fe26e39f64488952e5c991eeed1d6d6da7cc8381ae83927f0cfc AS builder
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
FROM gcr.io/distroless/cc-debian12:latest@sha256:d703b626ba455c4e6c6fbe5f36e6f427c85d51445598d564652a2f334179f96e AS runtime

# No RUN here: the runtime has no shell. CA certificates come with the base image (rediss://
# and JWT_JWKS_URL verify servers against /etc/ssl/certs).
COPY --from=builder /out/wsgate /usr/local/bin/wsgate
# /bin/sleep (coreutils, linked against the same bookworm glibc) only for the Helm chart's
# preStop hook on Kubernetes older than 1.30, which has no built-in sleep action. It is
# not a shell and runs nothing else.
COPY --from=builder /bin/sleep /bin/sleep

# Container defaults; every other setting keeps the binary's default (README "Settings").
# Keys (JWT_SECRET_FILE / JWT_PUBLIC_KEY_FILE / JWT_JWKS_URL) and REDIS_URL are given at
# run time, never baked in.
ENV LISTEN_ADDR=0.0.0.0:8000 \
    LOG_FORMAT=json

# A fixed, numeric non-root user (no passwd entry needed): Kubernetes can only verify
# runAsNonRoot for a numeric USER, and the Helm chart uses the same ids (10001).
USER 10001:10001
EXPOSE 8000

# SIGTERM starts the drain: /ready turns 503, sockets get close 1001, exit 0 within
# DRAIN_TIMEOUT_MS (default 10 s). Give the container more than that to stop
# (docker stop -t 15, compose stop_grace_period, k8s terminationGracePeriodSeconds).
# The binary is PID 1 (exec form ENTRYPOINT) and handles SIGTERM/SIGINT itself; it starts
# no child processes, so no init is needed to reap zombies.
STOPSIGNAL SIGTERM

# No HEALTHCHECK: the image has no HTTP client to GET /live with, and the binary has no
# health-check subcommand. Orchestrators probe /live and /ready themselves (Kubernetes
# httpGet probes; Compose runs `wsgate stats`, see docker-compose.yml).

ENTRYPOINT ["/usr/local/bin/wsgate"]
