# syntax=docker/dockerfile:1
#
# The Rendezvous image: `docker build -t rendezvous .` (or `podman build`), from the repository
# root. Two stages: the release binary is built on the Rust image, then copied alone onto
# Debian slim, where it runs as an unprivileged user.
#
#   docker build --build-arg GIT_REVISION=$(git rev-parse --short=12 HEAD) -t rendezvous .
#   docker run --rm rendezvous --version
#
# deploy/compose.yaml runs two instances of it with PostgreSQL, Kafka (Tansu), an OpenTelemetry
# collector and Prometheus; deploy/helm/rendezvous/ deploys it on Kubernetes.
#
# Without a registry, `cargo xtask image` (xtask/src/image.rs, docs/container.md) builds the
# same runtime image FROM scratch with podman: target/release/rendezvous, its shared libraries
# and a passwd file, then the runtime stage's ARG, LABEL, ENV, VOLUME, WORKDIR, USER, EXPOSE,
# ENTRYPOINT and CMD read from this file, and its HEALTHCHECK options with a command that needs
# no shell. Change them here and both images follow.

# The toolchain CI builds with (Cargo.toml's rust-version is the oldest that works).
ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM docker.io/library/rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build

# What the C parts of the dependencies need: librdkafka (rdkafka-sys, built with ./configure and
# make; no cmake since the `cmake-build` feature is off), the OpenSSL it links (openssl-src,
# built from source: perl and make), zstd and ring (a C compiler), zlib (found through
# pkg-config, linked dynamically; the runtime image has libz), and strip (binutils). The rust
# image has most of them; all are listed so the needs are written down.
RUN apt-get update \
    && apt-get install -y --no-install-recommends binutils gcc libc6-dev make perl pkg-config zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .

# The revision `rendezvous --version` and rendezvous_build_info show: the build context has no
# .git (see .dockerignore), so crates/app/build.rs takes RENDEZVOUS_REVISION from
# --build-arg GIT_REVISION=$(git rev-parse --short=12 HEAD); without it, "unknown".
ARG GIT_REVISION=unknown
ENV RENDEZVOUS_REVISION=${GIT_REVISION}

# Cache mounts keep the registry and the target directory between builds (BuildKit, buildah and
# podman all honour them); the binary is copied out of the cached target directory without its
# debug line tables (215 MB to 41 MB; backtraces still name the functions).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --package rendezvous-app --bin rendezvous \
    && install -D --mode=0755 target/release/rendezvous /out/rendezvous \
    && strip --strip-debug /out/rendezvous

FROM docker.io/library/debian:${DEBIAN_RELEASE}-slim AS runtime

ARG GIT_REVISION=unknown
LABEL org.opencontainers.image.title="rendezvous" \
      org.opencontainers.image.description="Durable event aggregation for workflow engines (gRPC)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.revision="${GIT_REVISION}"

# ca-certificates: the system roots for https OTLP, PostgreSQL verify-full and Kafka TLS when no
# private CA file is given. The binary needs nothing else beyond glibc, libgcc and libz, which
# the slim image has (OpenSSL, librdkafka and zstd are linked statically).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 rendezvous \
    && useradd --uid 10001 --gid 10001 --no-create-home \
        --home-dir /var/lib/rendezvous --shell /usr/sbin/nologin rendezvous \
    && install -d --owner=10001 --group=10001 --mode=0750 /var/lib/rendezvous \
    && install -d --mode=0755 /etc/rendezvous

COPY --from=build /out/rendezvous /usr/local/bin/rendezvous
COPY LICENSE /usr/share/doc/rendezvous/LICENSE
# Every setting with its default, for reference (the image reads no file unless --config or
# RENDEZVOUS_CONFIG names one).
COPY deploy/rendezvous.toml /usr/share/doc/rendezvous/rendezvous.toml

# Settings for a container (RENDEZVOUS__SECTION__KEY; deploy/rendezvous.toml lists them all):
# - gRPC and the admin HTTP listener (/metrics, /livez, /readyz) on every interface. A
#   non-loopback gRPC address refuses to start without authentication and TLS (SECURITY.md)
#   unless auth.allow_insecure = true: configure [server.tls] and [auth], or set
#   RENDEZVOUS__AUTH__ALLOW_INSECURE=true only where a mesh or a private network protects it.
# - Local state (the SQLite file of the embedded default) in the volume below; with PostgreSQL
#   (RENDEZVOUS__DATABASE__URL or database.url_file) nothing is written there.
# - JSON logs, one object per line.
ENV RENDEZVOUS__SERVER__LISTEN=0.0.0.0:50151 \
    RENDEZVOUS__ADMIN__LISTEN=0.0.0.0:50152 \
    RENDEZVOUS__DATA_DIR=/var/lib/rendezvous \
    RENDEZVOUS__TELEMETRY__LOG_FORMAT=json

VOLUME ["/var/lib/rendezvous"]
WORKDIR /var/lib/rendezvous
USER 10001:10001

# 50151: gRPC (server.listen); 50152: admin HTTP (admin.listen).
EXPOSE 50151 50152

# The image has no curl: bash (in every Debian image) asks /livez over /dev/tcp and passes on an
# HTTP 200. /livez answers while the process runs; /readyz (the database reachable, not
# draining) is for routing traffic, which Kubernetes' readiness probe and compose's
# `depends_on` do. Port 50152 is admin.listen's above: change both together. (`cargo xtask
# image` keeps these options but runs `rendezvous waits list --limit 0 --json`, which connects
# to the gRPC listener and asks for nothing: its image has no bash.)
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["/bin/bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/50152 && printf 'GET /livez HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && IFS= read -r -t 2 status <&3 && [[ $status == HTTP/1.?' 200'* ]]"]

# `docker run IMAGE` serves; `docker run IMAGE migrate` applies the migrations and exits;
# `docker run IMAGE --help` lists the other commands.
ENTRYPOINT ["/usr/local/bin/rendezvous"]
CMD ["serve"]
