# syntax=docker/dockerfile:1.7
# One image for every role: `kuant operator`, `kuant ops-api`, and the agent pods the
# operator spawns (`kuant agent ...`). Build with BuildKit:
#   docker build -t ghcr.io/kuant-dev/kuant:0.1.0 .

FROM rust:1.95-bookworm AS builder
WORKDIR /src
# sqlx checks queries at compile time against the committed .sqlx/ data, never a live database.
ENV SQLX_OFFLINE=true
COPY . .
# The registry, git checkouts and target/ live in BuildKit cache mounts, so a rebuild
# downloads nothing and recompiles only what changed. target/ is a cache mount and
# vanishes after this step: the binary is copied out of it in the same RUN.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --profile dist --locked --bin kuant \
 && install -D -m 0755 target/dist/kuant /out/kuant

# glibc, libgcc, OpenSSL and CA certificates; no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="kuant" \
      org.opencontainers.image.description="Kubernetes-native platform for running crypto trading agents" \
      org.opencontainers.image.source="https://github.com/kuant-dev/kuant" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/kuant /usr/local/bin/kuant
# 65532 is distroless' nonroot user; the chart runs every pod as this uid.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/kuant"]
