# syntax=docker/dockerfile:1
# The Brindle image: brindle-node, brindlectl, brindle-bgpd, brindle-install-cni and the CNI
# plugin. docs/install.md#the-image explains the choices; build it with
#   docker build -t <registry>/brindle:0.1.0 .
# and set that name in manifests/brindle.yaml (twice: init container and agent).

# ---- build -------------------------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
ENV CARGO_PROFILE_RELEASE_STRIP=symbols \
    CARGO_PROFILE_RELEASE_DEBUG=false
# The CNI plugin is copied onto the host and runs there, against whatever C library the host
# has: it is linked statically (static-pie glibc; it does no name lookups, so glibc's static
# caveats do not apply). Its own target directory keeps the static flags away from the agent.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p brindle-agent \
        --bin brindle-node --bin brindlectl --bin brindle-bgpd --bin brindle-install-cni \
 && RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked -p brindle-cni --bin brindle \
        --target x86_64-unknown-linux-gnu --target-dir target/static \
 && mkdir -p /out \
 && cp target/release/brindle-node target/release/brindlectl target/release/brindle-bgpd \
       target/release/brindle-install-cni /out/ \
 && cp target/static/x86_64-unknown-linux-gnu/release/brindle /out/brindle

# ---- runtime -----------------------------------------------------------------------------
# Debian slim rather than distroless: natOutgoing runs `nft -f -`, so the nft binary must be
# there. Nothing else is installed (the agent speaks netlink itself; no iproute2, no iptables).
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends nftables \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/*
COPY --from=build /out/brindle-node /out/brindlectl /out/brindle-bgpd \
     /out/brindle-install-cni /out/brindle /usr/local/bin/
COPY LICENSE /usr/share/doc/brindle/LICENSE
# The agent's ports: health (/liveness, /readiness), Prometheus metrics, BGP.
EXPOSE 9099 9091 179
CMD ["brindle-node"]
