#!/usr/bin/env bash
# Idle cost of the agent on the built-in simulator with three gates (a closed file gate, a GPIO
# line in a sysfs-like test tree, a maintenance window): wake-ups (context switches of all its
# threads, /proc/PID/task/*/status), CPU time and RSS over a quiet window.
# Usage: benches/idle.sh [SECONDS] [BINARY]. Targets: <= 0.2 wake-ups/s, <= 0.02 % of one core.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
bin=${2:-./target/release/yurt-ota}
[ -n "${2:-}" ] || cargo build --release --locked -q
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
dir=$(mktemp -d)
pid=
trap '[ -z "$pid" ] || kill $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
mkdir -p "$dir/gpio/gpio17"
echo 1 > "$dir/gpio/gpio17/value"
cat > "$dir/config.toml" <<EOF
[api]
listen = "127.0.0.1:$port"
[upstream]
kind = "sim"
[state]
dir = "$dir/state"
[policy]
mode = "auto"
[[gate]]
name = "vehicle-stopped"
kind = "file"
path = "$dir/run/vehicle/stopped"
safety = true
[[gate]]
name = "park-brake"
kind = "gpio-sysfs"
line = 17
sysfs_root = "$dir/gpio"
[[gate]]
name = "night"
kind = "window"
windows = ["Mon-Fri 01:00-05:00", "Sat-Sun 00:00-24:00"]
timezone = "UTC"
EOF
"$bin" run --config "$dir/config.toml" 2>"$dir/log" &
pid=$!
# The simulator settles first (pre-pulls finish, the snapshot changes): then it is idle.
sleep 10
# Voluntary/involuntary per thread: involuntary ones are preemptions by other load.
per_thread() {
    for t in /proc/$pid/task/*; do
        printf '%s=%s ' "$(cat "$t/comm")" \
            "$(awk '/^voluntary_ctxt/ {v = $2} /nonvoluntary_ctxt/ {n = $2} END {print v "/" n}' "$t/status")"
    done
}
switches() { cat /proc/$pid/task/*/status | awk '/ctxt_switches/ {s += $2} END {print s}'; }
# CPU time in ns from the scheduler (schedstat), finer than the 10 ms ticks of /proc/PID/stat.
cpu_ns() { cat /proc/$pid/task/*/schedstat | awk '{s += $1} END {printf "%d", s}'; }
s0=$(switches); t0=$(cpu_ns); b0=$(per_thread)
sleep "$secs"
s1=$(switches); t1=$(cpu_ns); b1=$(per_thread)
threads=$(ls /proc/$pid/task | wc -l)
rss=$(awk '/VmRSS/ {print $2, $3}' /proc/$pid/status)
awk -v s="$((s1 - s0))" -v t="$((t1 - t0))" -v secs="$secs" -v th="$threads" -v rss="$rss" 'BEGIN {
    printf "idle %ss, 3 gates (file closed, gpio-sysfs test tree, window), sim: %d threads, %d context switches = %.3f wake-ups/s (target <= 0.2), %.2f ms CPU = %.4f%% of one core (target <= 0.02%%), VmRSS %s\n",
        secs, th, s, s / secs, t / 1e6, t / 1e9 / secs * 100, rss }'
echo "per thread, before: $b0"
echo "per thread, after:  $b1"
echo "last log lines:"; tail -n 4 "$dir/log"
