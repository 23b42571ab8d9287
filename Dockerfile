# Patchbay container image: a multi-stage build, then a slim non-root runtime.
# Build: docker build -t patchbay .   (the build stage runs exactly `cargo build --release --locked`)

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so a source change does not refetch them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src tests/api && echo 'fn main() {}' > src/main.rs && echo '' > src/lib.rs \
    && echo 'fn main() {}' > tests/api/main.rs && cargo fetch --locked
COPY . .
RUN cargo build --release --locked

# distroless/cc: glibc and libgcc only, no shell, ships a `nonroot` user (uid 65532), used below by number.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/patchbay /usr/local/bin/patchbay
# The defaults are compiled into the binary; this copy documents them and can be layered with --config.
COPY config/default.toml /etc/patchbay/default.toml
# Containers log JSON; the embedded queue lives on a volume, so the root filesystem can be read-only.
ENV PATCHBAY__LOG__FORMAT=json \
    PATCHBAY__SERVER__LISTEN=0.0.0.0:8080 \
    PATCHBAY__QUEUE__PATH=/var/lib/patchbay/queue.sqlite3
VOLUME ["/var/lib/patchbay"]
EXPOSE 8080
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/patchbay"]
CMD ["serve"]
