# syntax=docker/dockerfile:1
# IMS API image: `docker build -t ims-api .`, or through compose.yaml (docs/deploy.md).

# ---- Stage 1: build -------------------------------------------------------------------
# rust:1-bookworm: the newest stable toolchain (the workspace needs >= 1.88) on the same
# Debian release as the runtime stage, so the binary links against the glibc it runs with.
# It also has the C compiler that mimalloc, ring and the bundled SQLite need.
FROM rust:1-bookworm AS build
WORKDIR /src

# Dependencies first, in their own layer: it is rebuilt only when a manifest or Cargo.lock
# changes, not on every source edit. Cargo loads every workspace member and every declared
# target before it builds anything, so each crate gets an empty lib.rs, ims-api a main.rs,
# and each [[bench]] a stub file; the stubs are deleted once the dependencies are compiled.
COPY Cargo.toml Cargo.lock ./
COPY crates/ims-api/Cargo.toml crates/ims-api/
COPY crates/ims-redis/Cargo.toml crates/ims-redis/
COPY crates/ims-testkit/Cargo.toml crates/ims-testkit/
RUN set -eu; \
    for d in crates/*; do \
        mkdir -p "$d/src" "$d/benches"; \
        : > "$d/src/lib.rs"; \
        for b in $(awk '/^\[\[bench\]\]/ {f=1; next} /^\[/ {f=0} f && /^name *=/ {sub(/^name *= *"/, ""); sub(/".*/, ""); print}' "$d/Cargo.toml"); do \
            echo 'fn main() {}' > "$d/benches/$b.rs"; \
        done; \
    done; \
    echo 'fn main() {}' > crates/ims-api/src/main.rs; \
    cargo build --release --locked -p ims-api; \
    rm -rf crates

# The real sources, migrations included (sqlx::migrate! embeds crates/ims-api/migrations
# into the binary at compile time, so the image needs no migration files at run time).
# COPY keeps the build context's modification times, which can be older than the stub
# build's artifacts; cargo judges workspace crates by mtime and would keep the stubs.
# `touch` makes every source newer, so the workspace crates are recompiled for sure.
COPY crates crates
RUN find crates -type f -exec touch {} + \
    && cargo build --release --locked -p ims-api \
    && install -m 0755 target/release/ims-api /usr/local/bin/ims-api

# ---- Stage 2: runtime -----------------------------------------------------------------
FROM debian:bookworm-slim

# ca-certificates: rediss:// (TLS to Redis) verifies servers against the system store
# (rustls-native-certs). Nothing else: SQLite is compiled in, PostgreSQL needs no libpq.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# A fixed, non-root uid/gid (10001) that matches no host user, so a bind-mounted /data can
# be prepared with `chown 10001:10001`. /data holds the default SQLite file (and its WAL).
RUN groupadd --system --gid 10001 ims \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin ims \
    && install -d -o 10001 -g 10001 -m 0750 /data

COPY --from=build /usr/local/bin/ims-api /usr/local/bin/ims-api

# The server's own default is 127.0.0.1:3000, unreachable from outside a container.
# sqlite:///data/… is an absolute path (the third slash), created on first start (mode=rwc).
# Compose and `docker run -e` override both (e.g. DATABASE_URL=postgres://…).
ENV IMS_BIND=0.0.0.0:3000 \
    DATABASE_URL="sqlite:///data/ims.db?mode=rwc"

# The working directory is where the binary looks for an optional .env file.
WORKDIR /data
USER 10001:10001
EXPOSE 3000

# `ims-api healthcheck` GETs /health/live on IMS_BIND (0.0.0.0 means loopback) and exits 0
# on 200: the slim image has no curl. The start period covers migrations on first start.
# podman builds OCI images by default, which drop HEALTHCHECK: compose.yaml repeats it.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["ims-api", "healthcheck"]

# Exec form: ims-api is PID 1 and gets SIGTERM itself, then drains in-flight requests.
ENTRYPOINT ["ims-api"]
CMD ["serve"]
