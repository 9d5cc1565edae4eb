# syntax=docker/dockerfile:1
#
# The apiscope agent image, as deployed by helm/apiscope. From the repository root:
#
#   docker build -t apiscope:0.1.0 .
#
# Keep target/ out of the build context (a .dockerignore listing `target` saves gigabytes).
#
# Stage 1 builds the agent the way `cargo xtask build` does: the eBPF programs with a nightly
# (rust-src for -Z build-std=core) and bpf-linker linked to that nightly's own libLLVM, then
# `cargo build --release -p agent`. It repeats `cargo xtask setup`'s steps instead of calling
# it, because setup also mounts tracefs for running the agent, which a `docker build` step
# is not allowed to do (no CAP_SYS_ADMIN), and building does not need.

ARG DEBIAN_RELEASE=bookworm

FROM rust:1.95-slim-${DEBIAN_RELEASE} AS builder

# The nightly that compiles the eBPF crate: its LLVM (22) must be the one bpf-linker is built
# against. This is the nightly the project is developed with (rustc 1.97.0-nightly e50aa6fba
# 2026-05-19, channel date 2026-05-20); a newer nightly may bring an LLVM that bpf-linker
# does not support.
ARG EBPF_TOOLCHAIN=nightly-2026-05-20
# xtask/src/setup.rs: BPF_LINKER_VERSION.
ARG BPF_LINKER_VERSION=0.13.0
# xtask/src/setup.rs: LLVM_PREFIX, where bpf-linker finds libLLVM at build and run time.
ARG LLVM_PREFIX=/opt/rustllvm

ENV EBPF_TOOLCHAIN=${EBPF_TOOLCHAIN} \
    CARGO_TERM_COLOR=never \
    CARGO_NET_RETRY=5

RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*

RUN rustup toolchain install "${EBPF_TOOLCHAIN}" --profile minimal --component rust-src

# bpf-linker against the nightly's libLLVM (the shared library rustc itself uses), exactly as
# `cargo xtask setup` links it: libLLVM.so and its soname in $LLVM_PREFIX/lib.
RUN set -eux; \
    sysroot="$(rustc +"${EBPF_TOOLCHAIN}" --print sysroot)"; \
    soname="$(cd "${sysroot}/lib" && ls libLLVM.so.* | head -n 1)"; \
    llvm_major="$(rustc +"${EBPF_TOOLCHAIN}" -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')"; \
    mkdir -p "${LLVM_PREFIX}/lib"; \
    ln -sf "${sysroot}/lib/${soname}" "${LLVM_PREFIX}/lib/libLLVM.so"; \
    ln -sf "${sysroot}/lib/${soname}" "${LLVM_PREFIX}/lib/${soname}"; \
    LLVM_PREFIX="${LLVM_PREFIX}" cargo install bpf-linker --version "${BPF_LINKER_VERSION}" \
        --locked --force --no-default-features --features "llvm-${llvm_major}"; \
    bpf-linker --version

WORKDIR /src
COPY . .
# The cache mounts keep the registry and the build directory between builds; the binary is
# copied out of the cached target directory, which is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p agent \
    && install -m 0755 target/release/apiscope /usr/local/bin/apiscope

# Stage 2: the agent alone. It links only glibc (libc, libm, libgcc_s); OpenSSL is never
# linked, only traced in the host's processes. `mount` (in the base image) is used only when
# the host has not mounted tracefs.
FROM debian:${DEBIAN_RELEASE}-slim

LABEL org.opencontainers.image.title="apiscope" \
      org.opencontainers.image.description="eBPF agent: the API calls of a host, seen from the kernel, exported as OpenTelemetry over OTLP" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=builder /usr/local/bin/apiscope /usr/local/bin/apiscope

# /healthz, /readyz and /metrics (server.listen; the chart sets 0.0.0.0:9750).
EXPOSE 9750
# The API inventory's database (inventory.directory): mount a host directory here to keep it
# across restarts (the chart mounts inventory.hostPath).
VOLUME /var/lib/apiscope

# No USER: the agent runs as root (uid 0), with only the capabilities the runtime grants it
# (the chart: BPF, PERFMON, SYS_ADMIN, SYS_PTRACE, DAC_READ_SEARCH, KILL, all others dropped, a
# read-only root file system). A non-root user is not possible: Kubernetes puts the added
# capabilities of a non-root container in its bounding set only, never in its effective set
# (a pod spec has no ambient capabilities), so bpf(2) and perf_event_open(2) would be refused.
# The only way around is file capabilities on the binary plus allowPrivilegeEscalation, which
# ends with the same capabilities as root with a bounded set, and breaks under
# no_new_privs.
ENTRYPOINT ["/usr/local/bin/apiscope"]
CMD ["run"]
