# Sourced by the cross scripts: linkers, C compilers and qemu runners for each device target.
# Debian's cross gcc links (and compiles C, for crates that build C); qemu-user-static runs the
# binaries and the tests.

# aarch64, static musl: the default for arm64 devices.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_RUNNER=qemu-aarch64-static
export CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc
# No RELRO segment: musl applies RELRO only to dynamically loaded objects, never in a static
# executable, so it protects nothing here, while GNU ld pads the file to put its end on a 64 KiB
# page boundary (up to 64 KiB of zeros in the binary; docs/performance.md "Size").
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_RUSTFLAGS="-C link-arg=-Wl,-z,norelro"
# aarch64, glibc (dynamic).
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER=qemu-aarch64-static
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
# armv7 hard-float: glibc, linked statically (crt-static), because the standard library for
# armv7-unknown-linux-musleabihf is not available from this workplace's rustup mirror.
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER=arm-linux-gnueabihf-gcc
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUNNER=qemu-arm-static
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUSTFLAGS="-C target-feature=+crt-static"
export CC_armv7_unknown_linux_gnueabihf=arm-linux-gnueabihf-gcc
# armv7 musl, for a machine whose rustup can install it.
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_MUSLEABIHF_LINKER=arm-linux-gnueabihf-gcc
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_MUSLEABIHF_RUNNER=qemu-arm-static
export CC_armv7_unknown_linux_musleabihf=arm-linux-gnueabihf-gcc

# Every target this project builds for, the device default first.
CROSS_TARGETS="aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf aarch64-unknown-linux-gnu x86_64-unknown-linux-gnu"

# The Debian packages and rustup targets a build for these targets needs, installed when
# missing (apt-get needs root, as in CI and on a build host).
cross_install() {
    local pkgs=()
    for t in "$@"; do
        case $t in
            aarch64-*) command -v aarch64-linux-gnu-gcc >/dev/null || pkgs+=(gcc-aarch64-linux-gnu) ;;
            armv7-*) command -v arm-linux-gnueabihf-gcc >/dev/null || pkgs+=(gcc-arm-linux-gnueabihf) ;;
        esac
        rustup target list --installed | grep -qx "$t" || rustup target add "$t"
    done
    if [ ${#pkgs[@]} -gt 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}"
    fi
}

# qemu-user-static, and binfmt_misc entries so that an ARM binary a test spawns runs too.
qemu_install() {
    if ! command -v qemu-aarch64-static >/dev/null || ! command -v qemu-arm-static >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static
    fi
    [ -e /proc/sys/fs/binfmt_misc/register ] ||
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    for arch in aarch64 arm; do
        [ -e "/proc/sys/fs/binfmt_misc/qemu-$arch" ] ||
            cat "/usr/lib/binfmt.d/qemu-$arch.conf" > /proc/sys/fs/binfmt_misc/register
    done
}
