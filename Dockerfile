# syntax=docker/dockerfile:1
# The kilo-rs image: `kg` (agent and Peer webhook) and `kgctl`, plus what the agent and the install-cni
# init container need at run time.
#
#   docker build -t ghcr.io/kilo-rs/kilo:latest .
#
# ghcr.io/kilo-rs/kilo is a placeholder name used by manifests/ and charts/kilo: push the image to a
# registry your nodes can pull from and change the image name there (or set image.repository).
# Without Docker or a registry: scripts/build-image.sh (docs/image.md).

# ---- build ----------------------------------------------------------------------------------------
FROM rust:1.95-bookworm AS builder
# libclang and clang: bindgen (used by the Linux networking dependencies) needs them at build time.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libclang-dev clang \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The cache mounts keep the registry and target directory between builds; the binaries are copied
# out of the cached target directory before the step ends.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p kg -p kgctl \
 && mkdir -p /out \
 && cp target/release/kg target/release/kgctl /out/

# ---- run ------------------------------------------------------------------------------------------
# The same contents as scripts/build-image.sh builds without Docker (see docs/image.md).
FROM debian:bookworm-slim
# iptables (legacy and nft; kg uses the variant the host uses), nftables: the firewall back-ends;
# iproute2 and wireguard-tools: `ip` and `wg` for people debugging a node
# (`kubectl -n kube-system exec ds/kilo -- wg show`); graphviz: `dot` for /graph and
# `kgctl graph -o svg`; ca-certificates: TLS to the API server; containernetworking-plugins: the CNI
# plugins. bridge, host-local, loopback and portmap are linked into /opt/cni/bin, where upstream's
# image has them and where the install-cni init container copies them from to the host.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates \
      containernetworking-plugins \
      graphviz \
      iproute2 \
      iptables \
      nftables \
      wireguard-tools \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /opt/cni/bin \
 && for p in bridge host-local loopback portmap; do ln /usr/lib/cni/$p /opt/cni/bin/$p; done
COPY --from=builder /out/kg /out/kgctl /opt/bin/
ENV PATH=/opt/bin:$PATH
# The agent's metrics, health and graph server, and the webhook's HTTPS port.
EXPOSE 1107 8443
ENTRYPOINT ["/opt/bin/kg"]
