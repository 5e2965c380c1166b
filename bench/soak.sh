#!/usr/bin/env bash
# The soak (issue 15): well-behaved calls, signaling at 20 round trips a second as a browser
# trickling candidates might, each from its own address (127.0.1.x), alone and then beside
# hostile clients from 127.0.0.2 (`loadgen abuse`: floods of every frame kind, messages that
# never end (issue 31), readers that never read, members ganging up on one who reads (issue 31),
# half-sent requests, connection churn), against a server with its default limits.
# The abusers run on the second core, the server and the calls on the first: on one machine the
# abusers' own CPU use would otherwise count against the server, as if they ran on it. Rounds
# alternate calm and abused runs; each number is the median of its rounds. Prints one line per
# server binary:
#
#   SOAK binary=PATH p99_calm_us=… p99_abused_us=… rss_before_kib=… rss_after_kib=… errors=…
#        gang_targets_closed=…   (errors: well-behaved members closed or failing; gang targets
#                                 closed: readers closed for what others sent them; both 0)
#        rounds_calm_us=…,… rounds_abused_us=…,…   (each round's p99; the medians above)
#        steal_ticks_calm=…,… steal_ticks_abused=…,…  (core 0 taken by the hypervisor, per round)
#
#   bench/soak.sh [--quick] [BINARY...]   # default: target/release/duo (needs the release
#                                          # build and loadgen: bench/run.sh builds both)
# Several binaries (e.g. a build from before issue 15) are soaked one after the other, each
# with the same load, for a before/after comparison in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=10; rooms=50; rounds=3
if [ "${1:-}" = "--quick" ]; then seconds=2; rooms=10; rounds=1; shift; fi
[ $# -gt 0 ] || set -- target/release/duo
loadgen=target/release/loadgen
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
# Time the hypervisor took core 0 away (steal, in clock ticks): on a VM, a round with steal
# measures the neighbours, not the server.
steal() { awk '/^cpu0 / {print $9}' /proc/stat; }
field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<<"$2"; }
port=3404
median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
calls() {
  taskset -c 0 $loadgen --url "ws://127.0.0.1:$port" --rooms "$rooms" --sources "$rooms" --pace 20 --seconds "$seconds" |
    grep '^RESULT'
}
for binary in "$@"; do
  LEPTOS_SITE_ROOT=target/site taskset -c 0 "$binary" --addr "127.0.0.1:$port" --metrics-addr 127.0.0.1:0 --log-level error &
  pids+=($!); server=$!
  for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
  calls >/dev/null # warm-up: the allocator's pools exist before RSS is read
  rss_before=$(rss_kib "$server")
  calm=""; abused=""; errors=0; stolen_calm=""; stolen_abused=""; gang_closed=0
  abuse_log=$(mktemp)
  for _ in $(seq "$rounds"); do
    before=$(steal); out=$(calls); stolen_calm+=" $(($(steal) - before))"
    calm+=" $(field p99_us "$out")"; errors=$((errors + $(field errors "$out")))
    taskset -c 1 $loadgen --url "ws://127.0.0.1:$port" abuse --each 2 --half-open 100 >"$abuse_log" &
    pids+=($!); abuser=$!
    # Measured once the abusers have spent their burst allowances (a minute's worth of new
    # sockets per address, 4 s of frames per socket): the steady state of an attack.
    sleep 5
    before=$(steal); out=$(calls); stolen_abused+=" $(($(steal) - before))"
    abused+=" $(field p99_us "$out")"; errors=$((errors + $(field errors "$out")))
    kill "$abuser"; wait "$abuser" 2>/dev/null || true
    gang_closed=$((gang_closed + $(grep -c '^GANG_TARGET_CLOSED' "$abuse_log" || true)))
    sleep 2
  done
  sleep 10 # the last half-sent requests end at the header timeout (10 s)
  rss_after=$(rss_kib "$server")
  rm -f "$abuse_log"
  kill "$server"; wait "$server" 2>/dev/null || true
  echo "SOAK binary=$binary p99_calm_us=$(median "$calm") p99_abused_us=$(median "$abused")" \
    "rss_before_kib=$rss_before rss_after_kib=$rss_after errors=$errors gang_targets_closed=$gang_closed" \
    "rounds_calm_us=$(tr ' ' ',' <<<"${calm# }") rounds_abused_us=$(tr ' ' ',' <<<"${abused# }")" \
    "steal_ticks_calm=$(tr ' ' ',' <<<"${stolen_calm# }") steal_ticks_abused=$(tr ' ' ',' <<<"${stolen_abused# }")"
  port=$((port + 1))
done
