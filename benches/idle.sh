#!/usr/bin/env bash
# Idle cost of the agent on the built-in simulator: threads, context switches of all its
# threads and CPU ticks over a quiet window. Usage: benches/idle.sh [SECONDS] [PORT]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
port=${2:-10391}
cargo build --release --locked -q
dir=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
printf '[api]\nlisten = "127.0.0.1:%s"\n[upstream]\nkind = "sim"\n' "$port" > "$dir/config.toml"
./target/release/yurt-ota run --config "$dir/config.toml" 2>/dev/null &
pid=$!
sleep 2
switches() { cat /proc/$pid/task/*/status | awk '/ctxt_switches/ {s += $2} END {print s}'; }
ticks() { awk '{print $14 + $15}' /proc/$pid/stat; }
s0=$(switches); t0=$(ticks)
sleep "$secs"
s1=$(switches); t1=$(ticks)
echo "idle for ${secs}s: $(ls /proc/$pid/task | wc -l) threads, $((s1 - s0)) context switches, $((t1 - t0)) CPU ticks ($(getconf CLK_TCK)/s), VmRSS $(awk '/VmRSS/ {print $2, $3}' /proc/$pid/status)"
