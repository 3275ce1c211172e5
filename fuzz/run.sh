#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 30) from the committed seeds in fuzz/seeds/,
# growing a working corpus in fuzz/corpus/ (not committed). Fails on the first crash, leak or
# timeout; libFuzzer leaves the input in fuzz/artifacts/TARGET/.
# Usage: fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
shift || true
# cargo-fuzz needs nightly flags (-Zsanitizer, -Cpasses=sancov...): the stable toolchain
# accepts them with RUSTC_BOOTSTRAP=1.
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked --version 0.13.2
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi
cargo fuzz build
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t"
    echo "== $t: ${secs}s"
    start=$(date +%s)
    # -timeout: one input taking over 10 s is a finding (a hang), not a slow machine.
    log="fuzz/corpus/$t.log"
    status=0
    cargo fuzz run "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb)' "$log" || true
    if [ "$status" -ne 0 ]; then
        tail -n 40 "$log" >&2
    fi
    echo "== $t: exit $status after $(( $(date +%s) - start ))s, corpus $(ls "fuzz/corpus/$t" | wc -l) inputs"
    if [ "$status" -ne 0 ]; then
        echo "fuzz target $t failed; the input is in fuzz/artifacts/$t/" >&2
        exit 1
    fi
done
