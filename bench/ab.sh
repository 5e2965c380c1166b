#!/usr/bin/env bash
# A/B of two server builds on this machine: CPU per relayed message, interleaved rounds, so that
# the machine's drift hits both alike. For a change that may cost something per message:
#
#   git worktree add /tmp/before REV
#   (cd /tmp/before && CARGO_TARGET_DIR=/tmp/before-target cargo build --release --features ssr --bin duo)
#   cargo leptos build --release --precompress && cargo build --release --features bench --bin loadgen
#   bench/ab.sh /tmp/before-target/release/duo target/release/duo [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: bench/ab.sh BEFORE_BINARY AFTER_BINARY [ROUNDS]" >&2; exit 2; }
rounds=${3:-3}
hz=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
declare -A pid port=([before]=3410 [after]=3412) binary=([before]=$1 [after]=$2)
for name in before after; do
  flags=(--addr "127.0.0.1:${port[$name]}" --log-level warn --rate-limit 100000000)
  # Builds from before issue 14 serve /metrics on the main address and have no such flag.
  if "${binary[$name]}" --help | grep -q -- --metrics-addr; then flags+=(--metrics-addr 127.0.0.1:0); fi
  # Builds from issue 15 on cap sockets per client address; the load comes from one.
  if "${binary[$name]}" --help | grep -q -- --max-sockets-per-client; then
    flags+=(--max-sockets-per-client 100000 --sockets-per-minute-per-client 10000000 --max-connections 100000)
  fi
  if "${binary[$name]}" --help | grep -q -- --connections-per-second-per-client; then
    flags+=(--connections-per-second-per-client 1000000 --max-connections-per-client 1000000)
  fi
  LEPTOS_SITE_ROOT=target/site "${binary[$name]}" "${flags[@]}" & pids+=($!); pid[$name]=$!
done
sleep 1
for round in $(seq "$rounds"); do
  for case in "100 4000" "1000 600"; do
    read -r rooms size <<<"$case"
    for name in before after; do
      start=$(ticks "${pid[$name]}")
      out=$(target/release/loadgen --url "ws://127.0.0.1:${port[$name]}" --rooms "$rooms" --size "$size" --seconds 10 | grep '^RESULT')
      relayed=$(sed -n 's/.* relayed=\([0-9]*\).*/\1/p' <<<"$out")
      cpu=$(awk -v t=$(($(ticks "${pid[$name]}") - start)) -v hz="$hz" -v n="$relayed" 'BEGIN { printf "%.2f", t / hz * 1e6 / n }')
      echo "round $round, $rooms rooms, $size B, $name: $cpu µs CPU per relayed message"
    done
  done
done
