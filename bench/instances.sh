#!/usr/bin/env bash
# The cost of sharing rooms (issue 20): the load generator's calls (100 rooms, 600 B messages,
# window 4) against one instance without Redis, and against two instances sharing rooms
# through Redis with the two people of every room on different instances, so every message
# crosses Redis. Rounds alternate the two setups; each number is the median of its rounds.
# Prints:
#
#   SHARED one_per_sec=… one_cpu_us=… two_per_sec=… two_cpu_us=… redis_cpu_us=… errors=…
#
# CPU per relayed message: the instances' user+system time (both, for the pair) over the
# messages relayed; Redis's own CPU is reported apart.
#
#   bench/instances.sh [--quick]   # needs the release build and loadgen (bench/run.sh builds both)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=10; rounds=3
if [ "${1:-}" = "--quick" ]; then seconds=3; rounds=1; fi
command -v redis-server >/dev/null || { echo "redis-server is missing: run scripts/setup.sh" >&2; exit 1; }
loadgen=target/release/loadgen
clock_ticks=$(getconf CLK_TCK)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<<"$2"; }
median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
per_msg() { awk -v t="$1" -v hz="$clock_ticks" -v n="$2" 'BEGIN { printf "%.1f", n ? t / hz * 1e6 / n : 0 }'; }

redis-server --port 3406 --bind 127.0.0.1 --save '' --appendonly no >/dev/null & pids+=($!); redis=$!
wait_port 3406
limits=(--media mesh --metrics-addr 127.0.0.1:0 --log-level warn --rate-limit 100000000 --max-sockets-per-client 100000
  --sockets-per-minute-per-client 10000000 --connections-per-second-per-client 1000000
  --max-connections-per-client 1000000 --max-connections 100000)
instance() { LEPTOS_SITE_ROOT=target/site target/release/duo --addr "127.0.0.1:$1" "${limits[@]}" "${@:2}" & pids+=($!); }
instance 3409; one=$!
instance 3407 --redis redis://127.0.0.1:3406; a=$!
instance 3408 --redis redis://127.0.0.1:3406; b=$!
for port in 3407 3408 3409; do wait_port "$port"; done
ready() { { exec 3<>"/dev/tcp/127.0.0.1/$1" && printf 'GET /readyz HTTP/1.0\r\n\r\n' >&3 && head -n1 <&3 | grep -q ' 200 '; } 2>/dev/null; }
for port in 3407 3408; do
  for _ in $(seq 100); do ready "$port" && break; sleep 0.1; done
  ready "$port" || { echo "the instance on $port never became ready" >&2; exit 1; }
done

errors=0; one_rate=""; one_cpu=""; two_rate=""; two_cpu=""; redis_cpu=""
for round in $(seq "$rounds"); do
  echo "sharing, round $round of $rounds: one instance" >&2
  before=$(cpu_ticks $one)
  out=$($loadgen --url ws://127.0.0.1:3409 --rooms 100 --size 600 --seconds "$seconds" | grep '^RESULT')
  after=$(cpu_ticks $one)
  one_rate+=" $(field per_sec "$out")"; one_cpu+=" $(per_msg $((after - before)) "$(field relayed "$out")")"
  errors=$((errors + $(field errors "$out")))
  echo "sharing, round $round of $rounds: two instances and Redis" >&2
  before=$(( $(cpu_ticks $a) + $(cpu_ticks $b) )); before_redis=$(cpu_ticks $redis)
  out=$($loadgen --url ws://127.0.0.1:3407 --second-url ws://127.0.0.1:3408 --rooms 100 --size 600 --seconds "$seconds" | grep '^RESULT')
  after=$(( $(cpu_ticks $a) + $(cpu_ticks $b) )); after_redis=$(cpu_ticks $redis)
  relayed=$(field relayed "$out")
  two_rate+=" $(field per_sec "$out")"; two_cpu+=" $(per_msg $((after - before)) "$relayed")"
  redis_cpu+=" $(per_msg $((after_redis - before_redis)) "$relayed")"
  errors=$((errors + $(field errors "$out")))
done
echo "SHARED one_per_sec=$(median "$one_rate") one_cpu_us=$(median "$one_cpu") two_per_sec=$(median "$two_rate") two_cpu_us=$(median "$two_cpu") redis_cpu_us=$(median "$redis_cpu") errors=$errors"
