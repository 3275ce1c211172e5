#!/usr/bin/env bash
# The whole test suite, the integration tests of the real binary included, for a device target
# under qemu-user-static:  cross/test.sh [TARGET]   (default aarch64-unknown-linux-musl)
#
# The test binaries run through CARGO_TARGET_<TARGET>_RUNNER (cross/env.sh); the agent binary
# they start runs through binfmt_misc, which this script registers for qemu.
set -euo pipefail
cd "$(dirname "$0")/.."
. cross/env.sh
target=${1:-aarch64-unknown-linux-musl}
cross_install "$target"
qemu_install
# One test at a time: under qemu-user each agent a test starts is emulated too, and two tests
# that start several (the fleet tests start five) beside each other made waits time out (a
# watch reconnect not seen in 90 s, once, for armv7; the same test passes alone in 8 s).
cargo test --locked --target "$target" -- --test-threads=1
