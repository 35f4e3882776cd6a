# calsync container image: one image for the controller and the REST sidecar
# (`calsync controller`, `calsync api`). Build: docker build -t calsync .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY src src
COPY crds crds
RUN cargo build --release --locked --bin calsync && cp target/release/calsync /calsync

# distroless/cc: glibc, CA certificates (for HTTPS to Google, Microsoft and iCloud), no shell,
# runs as the nonroot user (65532).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /calsync /usr/local/bin/calsync
USER 65532:65532
ENV CALSYNC_LOG_FORMAT=json
ENTRYPOINT ["/usr/local/bin/calsync"]
CMD ["--help"]
