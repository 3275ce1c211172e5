#!/usr/bin/env bash
# Release binaries, and with --deb the .deb packages, for devices.
#
#   cross/build.sh                 every target: aarch64 musl, armv7, aarch64 gnu, x86_64
#   cross/build.sh --deb           and a .deb for arm64, armhf and amd64 (target/debian/)
#   cross/build.sh TARGET...       only these targets
#
# It installs what it needs: rustup targets, Debian's cross gcc, cargo-deb (for --deb).
# Stripped binaries land in target/TARGET/release/yurt-ota; a size table is printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
. cross/env.sh

deb=false
targets=()
for arg in "$@"; do
    case $arg in
        --deb) deb=true ;;
        -h | --help) sed -n '2,10p' "$0"; exit 0 ;;
        *) targets+=("$arg") ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || read -r -a targets <<< "$CROSS_TARGETS"

cross_install "${targets[@]}"
if $deb && ! command -v cargo-deb >/dev/null; then
    cargo install cargo-deb --locked --version 3.8.0
fi

for t in "${targets[@]}"; do
    echo "== $t"
    if $deb; then
        # The arm64 package is the static musl build; armhf the static armv7 build; amd64 the
        # native one. The aarch64 glibc binary is built but not packaged.
        case $t in
            aarch64-unknown-linux-gnu) cargo build -p yurt-ota --locked --release --target "$t" ;;
            *) cargo deb -p yurt-ota --locked --target "$t" ${DEB_REVISION:+--deb-revision "$DEB_REVISION"} ;;
        esac
    else
        cargo build -p yurt-ota --locked --release --target "$t"
    fi
done

echo
echo "| target | stripped binary (bytes) | linking |"
echo "|---|---|---|"
for t in "${targets[@]}"; do
    bin=target/$t/release/yurt-ota
    link=$(file -b "$bin" | grep -o 'statically linked\|dynamically linked' || true)
    echo "| $t | $(stat -c %s "$bin") | $link |"
done
if $deb; then
    echo
    ls -l target/debian/*.deb
fi
