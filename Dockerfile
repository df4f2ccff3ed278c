# syntax=docker/dockerfile:1
# tokenwarden image: the binary and its default config on distroless, non-root.
#   docker build -t tokenwarden .                               # the proxy (default target)
#   docker build --target mock -t tokenwarden-mock .            # the mock provider, for demos
# The compose stack (deploy/compose) builds both. No Docker engine runs on this project's
# development and CI machines: tests/deploy_manifests.rs lints this file with hadolint and runs
# its target-stub step, but the image itself is not built there.
ARG RUST_VERSION=1.95

# Dependencies only, cached until the manifests or Cargo.lock change: every target the workspace's
# Cargo.toml files declare (the proxy's, the mock's in mock/) gets a stub (cargo refuses a
# manifest whose bin or bench files are missing), the dependency graphs of both binaries are built
# (the mock alone resolves fewer features, so its graph is built too, for the build-mock stage),
# then the stub sources and their build records are removed. The bench stubs stay: the later
# stages copy only sources, and cargo still wants benches/*.rs.
FROM rust:${RUST_VERSION}-slim-bookworm AS deps
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY mock/Cargo.toml ./mock/
# Stub targets (tests/deploy_manifests.rs runs this step and the clean-up against Cargo.toml).
RUN mkdir -p src mock/src benches \
    && echo 'fn main() {}' > src/main.rs \
    && echo 'fn main() {}' > mock/src/main.rs \
    && touch src/lib.rs mock/src/lib.rs \
    && sed -n '/^\[\[bench\]\]/,/^name/s/^name *= *"\([^"]*\)".*/\1/p' Cargo.toml \
       | while read -r bench; do echo 'fn main() {}' > "benches/${bench}.rs"; done
# Removing the crate's own fingerprints makes cargo rebuild it from the real sources later,
# whatever their timestamps (COPY keeps the build context's, which may predate the stubs).
RUN cargo build --release --locked \
    && cargo build --release --locked -p tokenwarden-mock \
    && rm -rf src mock/src target/release/.fingerprint/tokenwarden-* \
       target/release/deps/tokenwarden* target/release/deps/libtokenwarden*

FROM deps AS build
COPY src ./src
RUN cargo build --release --locked --bin tokenwarden \
    && mkdir -p /rootfs/var/lib/tokenwarden/data

FROM deps AS build-mock
COPY mock/src ./mock/src
RUN cargo build --release --locked -p tokenwarden-mock

# The mock provider (the mock/ crate): `target: mock` in docker-compose. Not part of the default image.
FROM gcr.io/distroless/cc-debian12:nonroot AS mock
COPY --from=build-mock /src/target/release/tokenwarden-mock /usr/local/bin/tokenwarden-mock
USER 65532:65532
EXPOSE 18000
ENTRYPOINT ["/usr/local/bin/tokenwarden-mock"]
CMD ["--listen", "0.0.0.0:18000"]

# The default (last) stage: the proxy. glibc of the build image (Debian 12) matches cc-debian12.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
LABEL org.opencontainers.image.title="tokenwarden" \
      org.opencontainers.image.description="A transparent sidecar proxy that makes LLM traffic observable and bounded" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /src/target/release/tokenwarden /usr/local/bin/tokenwarden
COPY config/tokenwarden.yaml /etc/tokenwarden/tokenwarden.yaml
# The memory budget store's default snapshot_path is data/budgets.json, relative to here.
COPY --from=build --chown=65532:65532 /rootfs/var/lib/tokenwarden /var/lib/tokenwarden
WORKDIR /var/lib/tokenwarden
USER 65532:65532
EXPOSE 8080 9464
# DL3064 flags the "TOKEN" in TOKENWARDEN_CONFIG; the value is a file path, not a secret.
# hadolint ignore=DL3064
ENV TOKENWARDEN_CONFIG=/etc/tokenwarden/tokenwarden.yaml
# `tokenwarden health` asks /healthz over a plain socket (distroless has no shell or curl).
# It answers whether the admin listener is on port 9464 of 127.0.0.1 or 0.0.0.0; pass
# --admin ADDR in your own HEALTHCHECK if you move it.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/tokenwarden", "health", "--admin", "127.0.0.1:9464"]
ENTRYPOINT ["/usr/local/bin/tokenwarden"]
