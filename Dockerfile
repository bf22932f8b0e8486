# syntax=docker/dockerfile:1
# One recipe for every binary of the suite:
#   docker build --build-arg SERVICE=user-service  -t ghcr.io/grpc-suite/user-service:0.1.0 .
#   docker build --build-arg SERVICE=order-service -t ghcr.io/grpc-suite/order-service:0.1.0 .
#   docker build --build-arg SERVICE=edge-gateway  -t ghcr.io/grpc-suite/edge-gateway:0.1.0 .
# The image holds the binary, glibc and the CA roots, runs as UID 65532 and
# writes nothing to its filesystem (the charts mount it read-only).

ARG RUST_VERSION=1.95
ARG SERVICE=user-service

FROM rust:${RUST_VERSION}-bookworm AS build
ARG SERVICE
RUN case "$SERVICE" in \
      user-service|order-service|edge-gateway) ;; \
      *) echo "SERVICE must be user-service, order-service or edge-gateway, not '$SERVICE'" >&2; exit 64 ;; \
    esac
WORKDIR /src
# The whole workspace: cargo needs every member's manifest; protos compile
# with protox (pure Rust), so no protoc is installed.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target,id=suite-target-${SERVICE} \
    cargo build --release --locked -p "$SERVICE" --bin "$SERVICE" \
 && install -D -m 0555 "target/release/$SERVICE" /out/service

# distroless/cc: glibc, libgcc and ca-certificates; no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
ARG SERVICE
LABEL org.opencontainers.image.title="${SERVICE}" \
      org.opencontainers.image.source="https://github.com/grpc-suite/suite" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/service /usr/local/bin/service
USER 65532:65532
# gRPC and admin ports of the three binaries (the charts set GRPC_ADDR and ADMIN_ADDR).
EXPOSE 50051 50052 8443 9101 9102 9103
ENTRYPOINT ["/usr/local/bin/service"]
CMD ["serve"]
