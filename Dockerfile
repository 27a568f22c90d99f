# A small image for the hub cluster: the binary, with libgit2 and OpenSSL built in (the
# `static` feature), on distroless's glibc base, running as a non-root user.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --features static --bin flotilla \
    && strip target/release/flotilla

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/flotilla /usr/local/bin/flotilla
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/flotilla"]
CMD ["run"]
