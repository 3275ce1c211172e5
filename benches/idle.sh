#!/usr/bin/env bash
# Idle cost of the agent on the built-in simulator with three gates (a closed file gate, a GPIO
# line in a sysfs-like test tree, a maintenance window): wake-ups (context switches of all its
# threads, /proc/PID/task/*/status), CPU time and RSS over a quiet window.
# Usage: benches/idle.sh [SECONDS] [BINARY]. Targets: <= 0.2 wake-ups/s, <= 0.02 % of one core.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
bin=${2:-./target/release/yurt-ota}
[ -n "${2:-}" ] || cargo build -p yurt-ota --release --locked -q
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
# One reading of every thread, all from the same set of /proc files: per thread
# name=voluntary/involuntary (involuntary ones are preemptions by other load), then the sums of
# context switches and of CPU time in ns (schedstat, finer than the 10 ms ticks of
# /proc/PID/stat), each on its own line.
reading() {
    awk '{ n = split(FILENAME, p, "/"); tid = p[n - 1]; f = p[n] }
        f == "comm" { name[tid] = $0; order[k++] = tid }
        f == "status" && /^voluntary_ctxt/ { v[tid] = $2 }
        f == "status" && /^nonvoluntary_ctxt/ { iv[tid] = $2 }
        f == "schedstat" { ns += $1 }
        END { for (i = 0; i < k; i++) { t = order[i]; printf "%s=%s/%s ", name[t], v[t], iv[t]; s += v[t] + iv[t] }
              printf "\n%d\n%d\n", s, ns }' \
        /proc/$pid/task/*/comm /proc/$pid/task/*/status /proc/$pid/task/*/schedstat
}
poll_switches() {
    awk '/^voluntary_ctxt/ {v = $2} /nonvoluntary_ctxt/ {n = $2} END {print v + n}' \
        "$(grep -lx poll /proc/$pid/task/*/comm | sed 's/comm$/status/')"
}
# The simulator settles first (pre-pulls finish, the snapshot changes): then it is idle.
sleep 10
# The window starts halfway between two polls (poll_interval is the default 5 s): a window
# that starts on a poll counts that poll and, 60 s and the time of a reading later, the next
# one at its other end, 13 for 12 intervals (the agent polls at 0, 5, 10 s..., and the
# settling above ends at 10 s).
p0=$(poll_switches)
for _ in $(seq 120); do [ "$(poll_switches)" = "$p0" ] || break; sleep 0.05; done
sleep 2.5
{ read -r b0; read -r s0; read -r t0; } < <(reading); w0=$(date +%s.%N)
sleep "$secs"
{ read -r b1; read -r s1; read -r t1; } < <(reading); w1=$(date +%s.%N)
threads=$(ls /proc/$pid/task | wc -l)
rss=$(awk '/VmRSS/ {print $2, $3}' /proc/$pid/status)
awk -v s="$((s1 - s0))" -v t="$((t1 - t0))" -v secs="$w1" -v w0="$w0" -v th="$threads" -v rss="$rss" 'BEGIN {
    secs -= w0
    printf "idle %.2fs, 3 gates (file closed, gpio-sysfs test tree, window), sim: %d threads, %d context switches = %.3f wake-ups/s (target <= 0.2), %.2f ms CPU = %.4f%% of one core (target <= 0.02%%), VmRSS %s\n",
        secs, th, s, s / secs, t / 1e6, t / 1e9 / secs * 100, rss }'
echo "per thread, before: $b0"
echo "per thread, after:  $b1"
echo "last log lines:"; tail -n 4 "$dir/log"
