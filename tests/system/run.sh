#!/usr/bin/env bash
# Whole-system tests: the real .deb under a real systemd, with a real GPIO character device, in a
# Debian bookworm VM under qemu, for amd64 and arm64.
#
#   tests/system/run.sh [amd64|arm64|all]      (default: all; needs root, as CI)
#
# It installs what it needs (qemu-system, mmdebstrap, ...), builds the packages, builds a bookworm
# image per architecture with the gpio-sim module (tests/system/image.sh; cached under
# $YURT_SYSTEM_CACHE, keyed by a hash of its inputs), boots it under qemu (TCG unless the CPU has
# vmx/svm), and runs tests/system/guest.sh inside the guest against the installed package. The
# guest writes its results to a 9p share; this script prints them as a table and fails on any
# failed or missing check.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
. cross/env.sh
export DEBIAN_FRONTEND=noninteractive
cache=${YURT_SYSTEM_CACHE:-/var/cache/yurt-ota-system}
# Under TCG on a loaded 2-core machine a guest run takes 5-15 min; this bounds a hung one.
vm_timeout=${YURT_SYSTEM_VM_TIMEOUT:-2400}
fail() { echo "FAIL: $*" >&2; exit 1; }

archs=()
case ${1:-all} in
    all) archs=(amd64 arm64) ;;
    amd64 | arm64) archs=("$1") ;;
    *) sed -n '2,13p' "$0"; exit 2 ;;
esac

# --- the Debian mirrors: the machine's own apt sources, never a host named here -----------------
# apt_uri SUITE: the first URI that the machine's apt sources (deb822 .sources, or one-line
# .list) give for SUITE.
apt_uri() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -e "$f" ] || continue
        awk -v s="$1" 'BEGIN { RS = "" } {
            uri = ""; ok = 0; n = split($0, line, "\n")
            for (i = 1; i <= n; i++) {
                if (line[i] ~ /^URIs:/) { split(line[i], u, " "); uri = u[2] }
                if (line[i] ~ /^Suites:/) { m = split(line[i], w, " "); for (j = 2; j <= m; j++) if (w[j] == s) ok = 1 }
            }
            if (ok && uri != "") print uri
        }' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -e "$f" ] || continue
        awk -v s="$1" '$1 == "deb" {
            i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
            if ($(i + 1) == s) print $i
        }' "$f"
    done
}
DEBIAN_MIRROR=$(apt_uri bookworm | sed -n 1p)
DEBIAN_SECURITY_MIRROR=$(apt_uri bookworm-security | sed -n 1p)
[ -n "$DEBIAN_MIRROR" ] && [ -n "$DEBIAN_SECURITY_MIRROR" ] ||
    fail "no bookworm and bookworm-security sources in this machine's apt sources (/etc/apt/sources.list*)"
export DEBIAN_MIRROR DEBIAN_SECURITY_MIRROR

# --- host tools ---------------------------------------------------------------------------------
host_install() {
    local need=() bpo=false
    command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
    command -v arch-test >/dev/null || need+=(arch-test)
    command -v mke2fs >/dev/null || need+=(e2fsprogs)
    command -v xz >/dev/null || need+=(xz-utils)
    command -v qemu-img >/dev/null || need+=(qemu-utils)
    for a in "${archs[@]}"; do
        case $a in
            amd64) command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86) ;;
            arm64) command -v qemu-system-aarch64 >/dev/null || need+=(qemu-system-arm ipxe-qemu) ;;
        esac
    done
    [ ${#need[@]} -gt 0 ] || return 0
    # qemu-utils from bookworm-backports breaks bookworm's qemu-system 7.2: take it from there too.
    if dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null | grep -q '~bpo'; then bpo=true; fi
    if $bpo && ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        printf '%s\n' 'Types: deb' "URIs: $DEBIAN_MIRROR" 'Suites: bookworm-backports' \
            'Components: main' 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' \
            > /etc/apt/sources.list.d/yurt-ota-system-backports.sources
    fi
    apt-get update -qq
    local sys=() other=()
    for p in "${need[@]}"; do
        case $p in qemu-*) sys+=("$p") ;; *) other+=("$p") ;; esac
    done
    [ ${#other[@]} -eq 0 ] || apt-get install -y -qq --no-install-recommends "${other[@]}"
    if [ ${#sys[@]} -gt 0 ]; then
        if $bpo; then
            apt-get install -y -qq --no-install-recommends -t bookworm-backports "${sys[@]}"
        else
            apt-get install -y -qq --no-install-recommends "${sys[@]}"
        fi
    fi
}

host_install
[[ " ${archs[*]} " == *" arm64 "* ]] && qemu_install   # binfmt for the arm64 chroot (cross/env.sh)

# --- the kernel version: image, headers and source from one version ----------------------------
# The newest bookworm(-security) kernel, resolved once from the host's apt lists (a machine whose
# lists are older than the mirror gets them refreshed).
kernel_version() {
    local abi ver
    abi=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/.*Depends: linux-image-\(6\.1\.0-[0-9]*\)-amd64$/\1/p' | head -1)
    ver=$(apt-cache policy linux-source-6.1 2>/dev/null | sed -n 's/^ *Candidate: //p')
    echo "$abi $ver"
}
read -r kabi kver <<< "$(kernel_version)"
if [ -z "${kabi:-}" ] || [ -z "${kver:-}" ] || [ "$kver" = "(none)" ] ||
    ! apt-cache show "linux-image-$kabi-amd64=$kver" >/dev/null 2>&1; then
    apt-get update -qq
    read -r kabi kver <<< "$(kernel_version)"
fi
[ -n "${kabi:-}" ] && [ -n "${kver:-}" ] || fail "cannot resolve the bookworm kernel version"
echo "== guest kernel: $kabi ($kver)"

# --- packages -----------------------------------------------------------------------------------
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
share_base=$(mktemp -d /tmp/yurt-ota-system.XXXXXX)
trap 'rm -rf "$share_base"' EXIT
debs() {
    local target=$1 arch=$2
    cross/build.sh --deb "$target" >/dev/null
    cp "target/debian/yurt-ota_${version}-1_${arch}.deb" "$share_base/"
    DEB_REVISION=2 cross/build.sh --deb "$target" >/dev/null
    cp "target/debian/yurt-ota_${version}-2_${arch}.deb" "$share_base/"
}

# --- images --------------------------------------------------------------------------------------
key=$(cat tests/system/image.sh tests/system/gpio-sim.Kbuild | sha256sum | cut -c1-16)
image_dir() { echo "$cache/$1-$kabi-$kver-$key"; }
# build_image ARCH [LOG]: builds the image unless cached; its output to LOG when given.
build_image() {
    local dir
    dir=$(image_dir "$1")
    [ ! -f "$dir/done" ] || return 0
    rm -rf "$dir"
    mkdir -p "$dir"
    local rc=0
    if [ -n "${2:-}" ]; then
        bash tests/system/image.sh "$1" "$kabi" "$kver" "$dir" > "$2" 2>&1 || rc=$?
    else
        bash tests/system/image.sh "$1" "$kabi" "$kver" "$dir" || rc=$?
    fi
    if [ $rc -eq 0 ]; then
        touch "$dir/done"
    else
        rm -rf "$dir"
        return 1
    fi
}
# With both architectures and no cached arm64 image, that image (the slow one: dpkg and the
# module build under qemu-user) is built while amd64 builds and runs.
arm64_image_job=""
if [ ${#archs[@]} -eq 2 ] && [ ! -f "$(image_dir arm64)/done" ]; then
    echo "== arm64: building the image in the background (log: $share_base/arm64-image.log)"
    build_image arm64 "$share_base/arm64-image.log" &
    arm64_image_job=$!
fi

# --- one architecture ---------------------------------------------------------------------------
declare -A summary
run_arch() {
    local arch=$1 t0 dir share qemu=() console
    t0=$(date +%s)
    case $arch in
        amd64) debs x86_64-unknown-linux-gnu amd64 ;;
        arm64) debs aarch64-unknown-linux-musl arm64 ;;
    esac
    local t_debs=$(($(date +%s) - t0))

    dir=$(image_dir "$arch")
    local t1 built=cached
    t1=$(date +%s)
    if [ "$arch" = arm64 ] && [ -n "$arm64_image_job" ]; then
        built="built in the background, waited"
        wait "$arm64_image_job" || { tail -n 40 "$share_base/arm64-image.log"; fail "arm64: image build"; }
    elif [ ! -f "$dir/done" ]; then
        built=built
        build_image "$arch" || fail "$arch: image build"
    fi
    local t_image=$(($(date +%s) - t1))
    echo "== $arch: image $built in ${t_image}s ($dir)"

    share=$share_base/$arch
    mkdir -p "$share"
    cp tests/system/guest.sh tests/system/config.toml "$share/"
    cp "$share_base/yurt-ota_${version}-1_${arch}.deb" "$share/yurt-ota-1.deb"
    cp "$share_base/yurt-ota_${version}-2_${arch}.deb" "$share/yurt-ota-2.deb"
    echo "$version" > "$share/version"
    # A copy-on-write overlay: the cached image stays clean, and the guest's own reboot keeps
    # its disk (the hold must survive it).
    qemu-img create -q -f qcow2 -F raw -b "$dir/root.img" "$share_base/$arch.qcow2"

    local accel=(-accel tcg,thread=multi -cpu max)
    console=$share_base/$arch-console.log
    case $arch in
        amd64)
            grep -qwE 'vmx|svm' /proc/cpuinfo && [ -w /dev/kvm ] && accel=(-accel kvm -cpu host)
            qemu=(qemu-system-x86_64 -machine q35 "${accel[@]}" -append "root=/dev/vda rw console=ttyS0")
            ;;
        arm64)
            [ "${accel[*]}" = "-accel tcg,thread=multi -cpu max" ] && accel=(-accel tcg,thread=multi -cpu max,pauth-impdef=on)
            qemu=(qemu-system-aarch64 -machine virt "${accel[@]}" -append "root=/dev/vda rw console=ttyAMA0")
            ;;
    esac
    qemu+=(-smp 2 -m 2048 -kernel "$dir/vmlinuz" -initrd "$dir/initrd.img"
        -drive "file=$share_base/$arch.qcow2,if=virtio,format=qcow2"
        -virtfs "local,path=$share,mount_tag=host,security_model=none,id=host"
        -nic none -serial "file:$console" -display none -monitor none)
    echo "== $arch: booting (${accel[*]}); console in $console, guest log in $share/guest.log"
    local t2 rc=0
    t2=$(date +%s)
    timeout "$vm_timeout" "${qemu[@]}" || rc=$?
    local t_vm=$(($(date +%s) - t2))
    mkdir -p target/system-tests
    cp "$console" "target/system-tests/$arch-console.log" 2>/dev/null || true
    cp "$share/guest.log" "target/system-tests/$arch-guest.log" 2>/dev/null || true
    cp "$share/results.tsv" "target/system-tests/$arch-results.tsv" 2>/dev/null || true

    # The table, and every expected check accounted for.
    local expected name status secs detail bad=0
    expected=$(sed -n 's/^CHECKS="\(.*\)"/\1/p' tests/system/guest.sh)
    echo
    echo "### system tests, $arch (kernel $kabi $kver, ${accel[*]})"
    echo
    echo "| check | result | seconds | detail |"
    echo "|---|---|---|---|"
    for name in $expected; do
        if line=$(grep -P "^$name\t" "$share/results.tsv" 2>/dev/null | tail -1); then
            IFS=$'\t' read -r _ status secs detail <<< "$line"
        else
            status=MISSING secs=- detail="not reached"
        fi
        [ "$status" = ok ] || bad=$((bad + 1))
        echo "| $name | $status | $secs | $detail |"
    done
    echo "| (packages built) | | $t_debs | |"
    echo "| (image $built) | | $t_image | |"
    echo "| (vm, boot to power-off) | | $t_vm | qemu exit $rc |"
    echo "| (total) | | $(($(date +%s) - t0)) | |"
    echo
    if [ "$rc" -ne 0 ] || [ "$bad" -ne 0 ]; then
        echo "---- $arch guest log (tail)"; tail -n 60 "$share/guest.log" 2>/dev/null || true
        echo "---- $arch console (tail)"; tail -n 40 "$console" 2>/dev/null || true
        summary[$arch]="FAIL ($bad checks not ok, qemu exit $rc)"
        return 1
    fi
    summary[$arch]=ok
}

status=0
for a in "${archs[@]}"; do
    run_arch "$a" || status=1
done
for a in "${archs[@]}"; do echo "system tests $a: ${summary[$a]:-FAIL}"; done
[ "$status" -eq 0 ] || fail "system tests"
