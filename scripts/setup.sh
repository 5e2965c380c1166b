#!/usr/bin/env bash
# Makes this machine ready to build, run and test the app. Idempotent: every step checks
# first, so a second run takes seconds. Works on a laptop with internet (rustup adds the
# wasm32 target) and on an offline Debian machine that reaches only the package registries
# (std for wasm32 is built from Debian's Rust source; see docs/toolchain.md).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

# Versions the build depends on; wasm-bindgen must equal the one pinned in Cargo.toml.
WASM_BINDGEN_VERSION=$(sed -n 's/^wasm-bindgen = { version = "=\([0-9.]*\)".*/\1/p; s/^wasm-bindgen = "=\([0-9.]*\)"/\1/p' Cargo.toml | head -n1)
CARGO_LEPTOS_VERSION=0.3.11

log() { printf '\033[1msetup:\033[0m %s\n' "$*"; }
sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Browsers (Chromium; Firefox ESR, which the tests drive through puppeteer-core), TURN server,
# TLS reverse proxy, the tool that makes test certificates, the one that checks the
# systemd unit (systemd-analyze), Redis and HAProxy for several instances (issue 20), and
# nftables for the NATs of the test of a call that cannot connect (end2end/tests/netns.ts).
apt_packages=(chromium firefox-esr coturn nginx-light openssl systemd redis-server haproxy nftables)
have_wasm_std() { [ -d "$(rustc --print sysroot)/lib/rustlib/wasm32-unknown-unknown/lib" ]; }

apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  sudo_if_needed apt-get update -qq
  # Installing a server package must not start it (nginx would listen on port 80): the tests
  # run their own instances. A policy-rc.d that says no, for the length of the install.
  local policy=/usr/sbin/policy-rc.d added=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | sudo_if_needed tee "$policy" >/dev/null
    sudo_if_needed chmod +x "$policy"
    trap 'sudo_if_needed rm -f /usr/sbin/policy-rc.d' EXIT
    added=1
  fi
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  if [ -n "$added" ]; then sudo_if_needed rm -f "$policy"; trap - EXIT; fi
}

use_debian_rust() {
  apt_install rustc-web cargo-web rust-web-src rust-web-llvm lld-22
  rustup toolchain list | grep -q '^web' || rustup toolchain link web /usr
}

# 1. The wasm32 target, on whichever toolchain can have it.
if have_wasm_std; then
  log "wasm32 std present for $(rustc --version)"
elif command -v rustup >/dev/null && timeout 60 rustup target add wasm32-unknown-unknown >/dev/null 2>&1 && have_wasm_std; then
  log "wasm32 target added by rustup"
else
  log "rustup cannot add wasm32 here: using Debian's Rust 1.96 with std built from source"
  use_debian_rust
  rustup override set web >/dev/null
  if ! have_wasm_std; then
    probe=$(mktemp -d)
    (cd "$probe" && cargo init -q --lib --name wasmstd \
      && RUSTC_BOOTSTRAP=1 RUSTFLAGS="-Cembed-bitcode=yes" \
         cargo build -q --release -Zbuild-std=std,panic_abort --target wasm32-unknown-unknown)
    dest="$(rustc --print sysroot)/lib/rustlib/wasm32-unknown-unknown/lib"
    sudo_if_needed mkdir -p "$dest"
    sudo_if_needed cp "$probe"/target/wasm32-unknown-unknown/release/deps/*.rlib "$dest/"
    sudo_if_needed rm -f "$dest"/libwasmstd-*
    rm -rf "$probe"
  fi
fi

# 2. Build tools that cargo-leptos runs from PATH (it downloads nothing: `no_downloads`).
# Without LTO and with many codegen units these compile in minutes instead of half an hour.
# cargo-leptos 0.3.11 needs rustc >= 1.96; an older rustup toolchain borrows Debian's.
install_cargo=(cargo)
if [ "$(rustc --version | sed -E 's/^rustc 1\.([0-9]+).*/\1/')" -lt 96 ]; then
  use_debian_rust
  install_cargo=(cargo +web)
fi
fast_install() {
  CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 "${install_cargo[@]}" install -q "$@"
}
if ! cargo leptos --version 2>/dev/null | grep -q "$CARGO_LEPTOS_VERSION"; then
  log "installing cargo-leptos $CARGO_LEPTOS_VERSION"
  fast_install cargo-leptos --version "$CARGO_LEPTOS_VERSION" --locked --features no_downloads
fi
if ! wasm-bindgen --version 2>/dev/null | grep -q "$WASM_BINDGEN_VERSION"; then
  log "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION"
  # Not --locked: its lock file names a crate release the registry no longer serves.
  fast_install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --force
fi

# 3. Browser, servers, and the npm packages: end-to-end tests (Playwright, binaryen's
#    wasm-opt) and the Node reference relay the benchmarks compare against.
apt_install "${apt_packages[@]}"
for dir in end2end bench/node-relay; do
  if ! (cd "$dir" && npm ls --silent >/dev/null 2>&1); then
    log "npm ci in $dir/"
    (cd "$dir" && npm ci --no-audit --no-fund --silent)
  fi
done
log "ready ($(rustc --version))"
