#!/usr/bin/env bash
# Every benchmark in one go, printed as one table (results and how to read them:
# docs/performance.md). Compares the app's server with a bare tokio relay (the ceiling) and
# the tutorial-style Node `ws` relay (the reference), all measured in this same run.
#
#   bench/run.sh           # full: 10 s per load run, 3 rounds, 10,000 idle connections, 10 calls
#   bench/run.sh --quick   # the same steps, small and short, so that CI keeps it working
#
# Load runs go in rounds (duo, bare, node, then again): each number is the median of its
# rounds, since one 10 s run on a shared 2-core machine varies by 10-20%.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/end2end/node_modules/.bin:$PATH"

if [ "${1:-}" = "--quick" ]; then
  run_seconds=2; rounds=1; idle_connections=500; calls=2; page_runs=1; quick=--quick; sfu_sizes="5"
else
  run_seconds=10; rounds=3; idle_connections=10000; calls=10; page_runs=5; quick=; sfu_sizes="5 10 25"
fi
# One socket per connection in the load generator and one in the server (each process has its
# own limit), plus headroom; never above the hard limit.
wanted=$(( idle_connections + 4096 )); hard=$(ulimit -Hn)
[ "$hard" = unlimited ] || [ "$wanted" -le "$hard" ] || wanted=$hard
ulimit -n "$wanted"

echo "building (release)…" >&2
cargo leptos build --release --precompress >/dev/null 2>&1 || cargo leptos build --release --precompress
cargo build --release --quiet --features bench --bin loadgen --bin bare-relay --bin sfu-load
loadgen=target/release/loadgen
clock_ticks=$(getconf CLK_TCK)

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

# ICE-TCP on any free port: its default (the next port) is the bare relay's.
duo_flags=(--metrics-addr 127.0.0.1:0 --log-level warn --media-tcp-addr 127.0.0.1:0
  --rate-limit 100000000 --max-sockets-per-client 100000 --sockets-per-minute-per-client 10000000
  --connections-per-second-per-client 1000000 --max-connections-per-client 1000000 --max-connections 100000)
LEPTOS_SITE_ROOT=target/site target/release/duo --addr 127.0.0.1:3400 "${duo_flags[@]}" & pids+=($!); duo=$!
target/release/bare-relay 127.0.0.1:3401 & pids+=($!); bare=$!
node bench/node-relay/relay.js 3402 >/dev/null & pids+=($!); node=$!
for port in 3400 3401 3402; do wait_port "$port"; done
declare -A url=([duo]=ws://127.0.0.1:3400 [bare]=ws://127.0.0.1:3401 [node]=ws://127.0.0.1:3402)
declare -A pid=([duo]=$duo [bare]=$bare [node]=$node)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<<"$2"; }

declare -A result runs
# load NAME ROOMS SIZE ROUND: messages/s, p50 and p99 round trip, server CPU per relayed message.
load() {
  local name=$1 rooms=$2 size=$3 round=$4 before after out relayed
  before=$(cpu_ticks "${pid[$name]}")
  out=$($loadgen --url "${url[$name]}" --rooms "$rooms" --size "$size" --seconds "$run_seconds" | grep '^RESULT')
  after=$(cpu_ticks "${pid[$name]}")
  relayed=$(field relayed "$out")
  local key=$name,$rooms,$size
  runs[$key,rate]+=" $(field per_sec "$out")"
  runs[$key,p50]+=" $(field p50_us "$out")"
  runs[$key,p99]+=" $(field p99_us "$out")"
  runs[$key,cpu]+=" $(awk -v t=$((after - before)) -v hz="$clock_ticks" -v n="$relayed" 'BEGIN { printf "%.1f", n ? t / hz * 1e6 / n : 0 }')"
  result[$key,$round,errors]=$(field errors "$out")
}

median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# idle NAME [FLAG]: RSS per open connection, in KiB.
idle() {
  local name=$1 before after log
  log=$(mktemp)
  before=$(rss_kib "${pid[$name]}")
  $loadgen --url "${url[$name]}" --idle "$idle_connections" ${2:-} >"$log" & local holder=$!
  for _ in $(seq 1200); do grep -q '^HELD' "$log" && break; sleep 0.1; done
  grep -q '^HELD' "$log" || { echo "could not hold $idle_connections connections to $name" >&2; exit 1; }
  sleep 1
  after=$(rss_kib "${pid[$name]}")
  kill "$holder"; wait "$holder" 2>/dev/null || true
  result[$name,idle]=$(awk -v b="$before" -v a="$after" -v n="$idle_connections" 'BEGIN { printf "%.1f", (a - b) / n }')
  rm -f "$log"
  sleep 1
}

# Memory first, while each server is fresh: freed load-run buffers would hide the cost.
for name in duo bare node; do
  echo "idle connections: $name" >&2
  idle "$name"
done
# The app's pages hold a socket that has not joined yet from page load until Start: measured on
# a fresh server of its own.
LEPTOS_SITE_ROOT=target/site target/release/duo --addr 127.0.0.1:3405 "${duo_flags[@]}" & pids+=($!)
pid[waiting]=$!; url[waiting]=ws://127.0.0.1:3405
wait_port 3405
echo "idle connections waiting to join: duo" >&2
idle waiting --join-later
kill "${pid[waiting]}"; wait "${pid[waiting]}" 2>/dev/null || true
cases=("100 600" "1000 600" "100 4000")
for round in $(seq "$rounds"); do
  for name in duo bare node; do
    echo "load, round $round of $rounds: $name" >&2
    for case in "${cases[@]}"; do
      load "$name" $case "$round"
    done
  done
done
for key in "${!runs[@]}"; do
  result[$key]=$(median "${runs[$key]}")
done

echo "soak: calls alone, then beside abusive clients…" >&2
soak=$(bench/soak.sh $quick | grep '^SOAK')
result[soak,errors]=$(field errors "$soak")
result[soak_gang,errors]=$(field gang_targets_closed "$soak")

echo "sharing rooms through Redis: two instances against one…" >&2
shared=$(bench/instances.sh $quick | grep '^SHARED')
result[shared,errors]=$(field errors "$shared")

# The forwarding unit: one room of each size on it, then on the bare SRTP floor (bench/sfu_load.rs).
echo "media through the server: rooms of $sfu_sizes, against the bare forwarder…" >&2
LEPTOS_SITE_ROOT=target/site target/release/duo --addr 127.0.0.1:3420 --media sfu "${duo_flags[@]}" & pids+=($!); sfu=$!
target/release/sfu-load floor --addr 127.0.0.1:3421 & pids+=($!); floor=$!
wait_port 3420
declare -A sfu_out
for size in $sfu_sizes; do
  sfu_out[duo,$size]=$(target/release/sfu-load duo --url ws://127.0.0.1:3420 --size "$size" --seconds "$run_seconds" --pid "$sfu" | grep '^RESULT')
  sfu_out[floor,$size]=$(target/release/sfu-load floor-load --addr 127.0.0.1:3421 --size "$size" --seconds "$run_seconds" --pid "$floor" | grep '^RESULT')
done
kill "$sfu" "$floor"

echo "call setup in Chromium ($calls calls)…" >&2
call_setup=$(node end2end/bench/call-setup.mjs "$calls" | grep '^RESULT')
echo "page load in Chromium ($page_runs runs, unthrottled and throttled)…" >&2
page_load=$(node end2end/bench/page-load.mjs "$page_runs" | grep '^RESULT')
start_ms=$(field start_ms "$(LEPTOS_SITE_ROOT=target/site $loadgen --url ws://127.0.0.1:3403 start-time -- target/release/duo --addr 127.0.0.1:3403 --metrics-addr 127.0.0.1:0 --log-level warn)")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf (b > 0 ? "%.2f" : "-"), a / b }'; }
row() { printf '| %-44s | %10s | %10s | %10s | %9s | %9s |\n' "$@"; }
echo
row "measure (median of $rounds × $run_seconds s, window 4)" "duo" "bare tokio" "node ws" "duo/bare" "duo/node"
row "---" "---:" "---:" "---:" "---:" "---:"
for case in "${cases[@]}"; do
  set -- $case
  for metric in rate cpu p50 p99; do
    label=""
    case $metric in
      rate) label="relayed msg/s, $1 rooms, $2 B" ;;
      cpu) label="server CPU µs per relayed msg, $1 rooms, $2 B" ;;
      p50) label="round trip p50 µs, $1 rooms, $2 B" ;;
      p99) label="round trip p99 µs, $1 rooms, $2 B" ;;
    esac
    d=${result[duo,$1,$2,$metric]}; b=${result[bare,$1,$2,$metric]}; n=${result[node,$1,$2,$metric]}
    row "$label" "$d" "$b" "$n" "$(ratio "$d" "$b")" "$(ratio "$d" "$n")"
  done
done
row "RSS KiB per idle connection ($idle_connections)" "${result[duo,idle]}" "${result[bare,idle]}" "${result[node,idle]}" "$(ratio "${result[duo,idle]}" "${result[bare,idle]}")" "$(ratio "${result[duo,idle]}" "${result[node,idle]}")"
row "… waiting to join (join=later, no JOIN yet)" "${result[waiting,idle]}" "" "" "" ""
errors=0
for key in "${!result[@]}"; do [[ $key == *,errors ]] && errors=$((errors + ${result[$key]%.*})); done
calm_p99=$(field p99_calm_us "$soak"); abused_p99=$(field p99_abused_us "$soak")
rss_before=$(field rss_before_kib "$soak"); rss_after=$(field rss_after_kib "$soak")
row "soak (bench/soak.sh): calls' round trip p99 µs" "$calm_p99" "" "" "" ""
row "soak: the same beside abusers (× alone)" "$abused_p99 ($(ratio "$abused_p99" "$calm_p99")×)" "" "" "" ""
row "soak: readers closed for what others sent them" "$(field gang_targets_closed "$soak")" "" "" "" ""
row "soak: server RSS KiB, before abuse → after" "$rss_before → $rss_after ($(awk -v a="$rss_after" -v b="$rss_before" 'BEGIN { printf "%+.1f MiB", (a - b) / 1024 }'))" "" "" "" ""
row "2 instances + Redis (bench/instances.sh): msg/s, 100 rooms, 600 B" "$(field two_per_sec "$shared") (one: $(field one_per_sec "$shared"))" "" "" "" ""
row "… CPU µs per msg, both instances (+ Redis)" "$(field two_cpu_us "$shared") (+$(field redis_cpu_us "$shared"); one: $(field one_cpu_us "$shared"))" "" "" "" ""
row "load generator errors (all runs)" "$errors" "" "" "" ""
row "server start to first WebSocket, ms" "$start_ms" "" "" "" ""
for size in $sfu_sizes; do
  d=${sfu_out[duo,$size]}; f=${sfu_out[floor,$size]}
  row "SFU room of $size: packets forwarded/s" "$(field per_sec "$d")" "floor $(field per_sec "$f")" "" "" ""
  row "… server CPU µs per forwarded packet" "$(field cpu_us_per_packet "$d")" "floor $(field cpu_us_per_packet "$f")" "" "$(ratio "$(field cpu_us_per_packet "$d")" "$(field cpu_us_per_packet "$f")")" ""
  row "… trip p50 / p99 µs (sender to receiver)" "$(field p50_us "$d") / $(field p99_us "$d")" "floor $(field p50_us "$f") / $(field p99_us "$f")" "" "" ""
  row "… packets lost, %" "$(field lost_percent "$d")" "floor $(field lost_percent "$f")" "" "" ""
done
# Browser measures: each beside its floor, measured in the same run (see end2end/bench/).
floor_row() { row "$1" "$2 (floor $3, $(ratio "$2" "$3")×)" "" "" "" ""; }
floor_row "call setup median, ms ($calls calls)" "$(field setup_ms "$call_setup")" "$(field floor_ms "$call_setup")"
row "call page, first visit, bytes on the wire" "$(field first_bytes "$page_load")" "" "" "" ""
row "call page, repeat visit, bytes on the wire" "$(field repeat_bytes "$page_load")" "" "" "" ""
floor_row "Start enabled, ms, unthrottled" "$(field unthrottled_ms "$page_load")" "$(field unthrottled_floor_ms "$page_load")"
floor_row "Start enabled, ms, 1.6 Mbit/s, 150 ms RTT" "$(field throttled_ms "$page_load")" "$(field throttled_floor_ms "$page_load")"
[ "$errors" -eq 0 ] || { echo "the load generator saw errors" >&2; exit 1; }
