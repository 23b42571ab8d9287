#!/usr/bin/env bash
# Makes local stand-ins for the Dockerfile's two public base images, for machines that reach Debian's
# package mirror but no container registry:
#   patchbay-base/build:bookworm    Debian bookworm, gcc, and this machine's own Rust toolchain
#                                   (stands in for rust:1.95-bookworm), with this machine's cargo
#                                   registry cache, so the image's `cargo fetch` downloads little,
#                                   and this machine's trusted CA certificates
#   patchbay-base/runtime:bookworm  a minimal Debian bookworm (stands in for distroless/cc-debian12)
#   patchbay-base/redis:bookworm    Debian's Redis, run as the official image runs it: in /data,
#                                   protected mode off (stands in for deploy/compose.yaml's redis)
# Build with them:
#   docker build --network host --build-arg BUILD_IMAGE=patchbay-base/build:bookworm \
#     --build-arg RUNTIME_IMAGE=patchbay-base/runtime:bookworm -t patchbay .
# Needs root, debootstrap and a running Docker engine. An image that exists already is kept
# (REBUILD=1 makes both again).
set -euo pipefail

suite=bookworm
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
work="${STAND_IN_WORKDIR:-$(mktemp -d)}"
build_tag=patchbay-base/build:$suite
runtime_tag=patchbay-base/runtime:$suite
redis_tag=patchbay-base/redis:$suite

have() { [ -z "${REBUILD:-}" ] && docker image inspect "$1" >/dev/null 2>&1; }

rootfs() { # DIR [PACKAGES]: a minbase bookworm root filesystem
  local dir=$1 include=${2:-}
  debootstrap --variant=minbase ${include:+--include="$include"} "$suite" "$dir" "$mirror" >"$dir.log" 2>&1 \
    || { tail -20 "$dir.log"; echo "debootstrap of $dir failed"; return 1; }
  # Package lists and caches only make the image larger.
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
}

pids=()
if ! have "$runtime_tag"; then
  rootfs "$work/runtime" & pids+=($!)
fi
if ! have "$build_tag"; then
  # gcc and the C library headers for crates that build C (SQLite); CA certificates for cargo's downloads.
  rootfs "$work/build" gcc,libc6-dev,ca-certificates & pids+=($!)
fi
if ! have "$redis_tag"; then
  rootfs "$work/redis" redis-server & pids+=($!)
fi
for pid in "${pids[@]}"; do wait "$pid"; done

if ! have "$runtime_tag"; then
  tar -C "$work/runtime" -c . | docker import - "$runtime_tag" >/dev/null
  echo "made $runtime_tag"
fi

if ! have "$build_tag"; then
  sysroot=$(rustc --print sysroot)
  mkdir -p "$work/build/usr/local/rust" "$work/build/usr/local/cargo/registry"
  # The toolchain without its documentation (share/), which is most of its size.
  for part in bin lib libexec etc; do
    [ -d "$sysroot/$part" ] && cp -a "$sysroot/$part" "$work/build/usr/local/rust/"
  done
  registry="${CARGO_HOME:-$HOME/.cargo}/registry"
  for part in index cache; do
    [ -d "$registry/$part" ] && cp -a "$registry/$part" "$work/build/usr/local/cargo/registry/"
  done
  # This machine's trusted CAs: the build reaches the package registries through the same network.
  cp /etc/ssl/certs/ca-certificates.crt "$work/build/etc/ssl/certs/ca-certificates.crt"
  tar -C "$work/build" -c . | docker import \
    --change 'ENV PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV CARGO_HOME=/usr/local/cargo' \
    - "$build_tag" >/dev/null
  echo "made $build_tag ($(rustc --version))"
fi

if ! have "$redis_tag"; then
  mkdir -p "$work/redis/data"
  # The official image builds Redis with protected mode off, so other containers reach it without a
  # password; Debian's keeps it on. The stand-in passes it off to redis-server, and runs anything else.
  cat > "$work/redis/usr/local/bin/redis-stand-in" <<'SCRIPT'
#!/bin/sh
if [ "$1" = redis-server ]; then shift; exec redis-server --protected-mode no "$@"; fi
exec "$@"
SCRIPT
  chmod 755 "$work/redis/usr/local/bin/redis-stand-in"
  tar -C "$work/redis" -c . | docker import \
    --change 'WORKDIR /data' \
    --change 'ENTRYPOINT ["/usr/local/bin/redis-stand-in"]' \
    --change 'CMD ["redis-server"]' \
    - "$redis_tag" >/dev/null
  echo "made $redis_tag"
fi

[ -z "${STAND_IN_WORKDIR:-}" ] && rm -rf "$work"
exit 0
