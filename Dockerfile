# syntax=docker/dockerfile:1
#
# The leash image: the `leash` binary (daemon and CLI) on Debian 12 slim.
#
#   docker build -t leash:0.1.0 .
#
# The builder runs what CI runs (.ci/run): `cargo xtask setup` (nightly with rust-src,
# bpf-linker 0.13 built against nightly's LLVM, bpftool), then `cargo xtask build
# --release`, whose build script compiles and embeds the eBPF object.
#
# The image runs as an unprivileged user by default, which suits the CLI (`leash run`,
# `leash task ...`: they only need the socket). The daemon needs root and either
# --privileged or these capabilities (deploy/kubernetes/daemonset.yaml says what each one
# is for): BPF, PERFMON, NET_ADMIN, SYS_ADMIN, SYS_RESOURCE, and CHOWN for socket.group.
# It also needs the host's pid namespace and /sys/fs/bpf, /sys/kernel/security,
# /sys/kernel/btf, /sys/fs/cgroup, /run/leash and /var/lib/leash from the host:
#
#   docker run -d --name leash --user 0 --privileged --pid host \
#     -v /sys/fs/bpf:/sys/fs/bpf:rshared -v /sys/kernel/security:/sys/kernel/security:ro \
#     -v /sys/kernel/btf:/sys/kernel/btf:ro -v /sys/fs/cgroup:/sys/fs/cgroup:ro \
#     -v /run/leash:/run/leash -v /var/lib/leash:/var/lib/leash \
#     -v /var/log/leash:/var/log/leash leash:0.1.0 daemon

# Keep in step with rust-version in Cargo.toml; bookworm matches the runtime's glibc.
ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm
ARG RUNTIME_IMAGE=docker.io/library/debian:bookworm-slim

FROM ${RUST_IMAGE} AS builder
WORKDIR /src
COPY . .
RUN cargo xtask setup
RUN cargo xtask build --release \
    && install -D -m 0755 target/release/leash /out/leash

FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="leash" \
      org.opencontainers.image.description="Per-task exec and network grants for AI agents, enforced in the kernel" \
      org.opencontainers.image.licenses="Apache-2.0 OR MIT"
COPY --from=builder /out/leash /usr/local/bin/leash
# Not root unless the pod or `docker run --user 0` says so (the daemon's case).
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/leash"]
CMD ["--help"]
