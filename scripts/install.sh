#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian machine: Debian's Chromium (with the
# Vulkan loader that WebGPU-in-Node uses), Prometheus, PostgreSQL and the npm packages from the lockfile.
# With --toolchains it also installs the compilers that rebuild the sample agents.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=()
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || pkgs+=(chromium)
[ -e /usr/lib/x86_64-linux-gnu/libvulkan.so.1 ] || [ -e /usr/lib/aarch64-linux-gnu/libvulkan.so.1 ] || pkgs+=(libvulkan1)
# Prometheus (and its promtool) for the metrics and alert-rule tests.
command -v promtool >/dev/null 2>&1 || pkgs+=(prometheus)
# PostgreSQL's server binaries: the journal's tests run on a throwaway cluster of their own (server/postgres-testing.ts).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || pkgs+=(postgresql)
if [ "${1:-}" = "--toolchains" ]; then
  for p in clang-19 lld-19 libclang-rt-19-dev-wasm32 wasi-libc rustc libstd-rust-dev-wasm32 lld-14 wabt; do
    dpkg -s "$p" >/dev/null 2>&1 || pkgs+=("$p")
  done
fi
if [ ${#pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "install: apt-get install ${pkgs[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
  else
    echo "install: missing Debian packages; run: sudo apt-get install -y ${pkgs[*]}" >&2
    exit 1
  fi
fi

export ONNXRUNTIME_NODE_INSTALL=skip
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
