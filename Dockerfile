# A small image for the hub cluster: the binary, with libgit2 and OpenSSL built in (the
# `static` feature), on distroless's glibc base, running as a non-root user.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --features static --bin flotilla \
    && strip target/release/flotilla

# helm v3 for kustomize's `helmCharts`, built from the Go module proxy like tests/build-helm.sh.
FROM golang:1.26-bookworm AS helm
RUN GOBIN=/out go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=v3.22.0" \
    helm.sh/helm/v3/cmd/helm@v3.22.0

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/flotilla /usr/local/bin/flotilla
COPY --from=helm /out/helm /usr/local/bin/helm
ENV FLOTILLA_HELM=/usr/local/bin/helm
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/flotilla"]
CMD ["run"]
