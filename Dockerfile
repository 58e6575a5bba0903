# syntax=docker/dockerfile:1
# The kilo-rs image: `kg` (agent and Peer webhook) and `kgctl`, plus what the agent and the install-cni
# init container need at run time.
#
#   docker build -t ghcr.io/kilo-rs/kilo:latest .
#
# ghcr.io/kilo-rs/kilo is a placeholder name used by manifests/ and charts/kilo: push the image to a
# registry your nodes can pull from and change the image name there (or set image.repository).

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
FROM debian:bookworm-slim
# iptables, nftables: the firewall back-ends; iproute2 and wireguard-tools: `ip` and `wg` for people
# debugging a node (`kubectl -n kube-system exec ds/kilo -- wg show`); ca-certificates: TLS to the API
# server; containernetworking-plugins: the CNI plugins (bridge, host-local, portmap, loopback, ... in
# /usr/lib/cni) that the install-cni init container copies to the host's /opt/cni/bin when Kilo is the
# CNI.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates \
      containernetworking-plugins \
      iproute2 \
      iptables \
      nftables \
      wireguard-tools \
 && rm -rf /var/lib/apt/lists/*
COPY --from=builder /out/kg /out/kgctl /opt/bin/
ENV PATH=/opt/bin:$PATH
# The agent's metrics, health and graph server, and the webhook's HTTPS port.
EXPOSE 1107 8443
ENTRYPOINT ["/opt/bin/kg"]
