# Patchbay container image: a multi-stage build, then a slim non-root runtime.
# Build: docker build -t patchbay .
# The base images are build arguments so that a machine without access to public registries can build
# with local stand-ins (deploy/docker/stand-in-images.sh makes them from Debian's packages).
ARG BUILD_IMAGE=rust:1.95-bookworm
# distroless/cc: glibc and libgcc only, no shell, ships a `nonroot` user (uid 65532), used below by number.
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${BUILD_IMAGE} AS build
WORKDIR /src
# Dependencies first, so a source change does not refetch them. Every target the manifest names gets a
# placeholder, or cargo refuses to read it.
COPY Cargo.toml Cargo.lock ./
COPY bench/Cargo.toml bench/
COPY crates/core/Cargo.toml crates/core/
COPY crates/sim/Cargo.toml crates/sim/
RUN mkdir -p src tests/api benches bench/src crates/core/src crates/sim/src \
    && echo 'fn main() {}' > src/main.rs && echo '' > src/lib.rs \
    && echo 'fn main() {}' > bench/src/main.rs \
    && echo '' > crates/core/src/lib.rs && echo '' > crates/sim/src/lib.rs \
    && echo 'fn main() {}' > tests/api/main.rs && echo 'fn main() {}' > benches/hot_paths.rs \
    && cargo fetch --locked
COPY . .
RUN cargo build --release --locked --bin patchbay \
    && mkdir -p /out/var/lib/patchbay

FROM ${RUNTIME_IMAGE}
COPY --from=build /src/target/release/patchbay /usr/local/bin/patchbay
# The defaults are compiled into the binary; this copy documents them and can be layered with --config.
COPY config/default.toml /etc/patchbay/default.toml
# The store's directory exists in the image, owned by the runtime user: a volume mounted there starts
# with this owner, so uid 65532 can write its queue (Docker would otherwise create it as root).
COPY --from=build --chown=65532:65532 /out/var/lib/patchbay /var/lib/patchbay
# Containers log JSON; the embedded queue lives on a volume, so the root filesystem can be read-only.
ENV PATCHBAY__LOG__FORMAT=json \
    PATCHBAY__SERVER__LISTEN=0.0.0.0:8080 \
    PATCHBAY__QUEUE__PATH=/var/lib/patchbay/queue.sqlite3
VOLUME ["/var/lib/patchbay"]
EXPOSE 8080
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/patchbay"]
CMD ["serve"]
