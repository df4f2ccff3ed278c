# syntax=docker/dockerfile:1
# Build: docker build -t tokenwarden .
FROM rust:1-slim-bookworm AS build
WORKDIR /src
# Cache dependencies: build against the manifests alone first.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src/bin \
    && echo 'fn main() {}' > src/main.rs \
    && echo 'fn main() {}' > src/bin/tokenwarden-mock.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src
COPY src ./src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin tokenwarden

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/tokenwarden /usr/local/bin/tokenwarden
COPY config/tokenwarden.yaml /etc/tokenwarden/tokenwarden.yaml
USER 65532:65532
EXPOSE 8080 9464
ENV TOKENWARDEN_CONFIG=/etc/tokenwarden/tokenwarden.yaml
HEALTHCHECK --interval=10s --timeout=3s CMD ["/usr/local/bin/tokenwarden", "health", "--admin", "127.0.0.1:9464"]
ENTRYPOINT ["/usr/local/bin/tokenwarden"]
