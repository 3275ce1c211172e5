#!/usr/bin/env bash
# Builds and checks the .deb packages as CI does (root needed: it installs and purges the amd64
# package on this machine). Usage: packaging/check-debs.sh
#   - builds arm64, armhf and amd64 packages (cross/build.sh --deb), and an amd64 0.2.0-2;
#   - lintian on each (clean but for the tags justified in packaging/debian/*.lintian-overrides);
#   - installs the amd64 package: user, files, modes, conffile, check-config, systemd-analyze
#     verify, the installed binary against the simulator;
#   - upgrades over a locally modified conffile (kept), removes (state kept), purges (gone);
#   - inspects the arm64 and armhf packages and runs their binaries under qemu.
set -euo pipefail
cd "$(dirname "$0")/.."
. cross/env.sh
export DEBIAN_FRONTEND=noninteractive
fail() { echo "FAIL: $*" >&2; exit 1; }
need=()
for cmd in lintian:lintian file:file adduser:adduser deb-systemd-helper:init-system-helpers systemd-analyze:systemd; do
    command -v "${cmd%%:*}" >/dev/null || need+=("${cmd#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    apt-get install -y -qq "${need[@]}"
fi
qemu_install

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
rm -f target/debian/*.deb
cross/build.sh --deb aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf x86_64-unknown-linux-gnu
amd64=target/debian/yurt-ota_${version}-1_amd64.deb
arm64=target/debian/yurt-ota_${version}-1_arm64.deb
armhf=target/debian/yurt-ota_${version}-1_armhf.deb
echo "| package | size (bytes) |"
echo "|---|---|"
for deb in "$arm64" "$armhf" "$amd64"; do echo "| $(basename "$deb") | $(stat -c %s "$deb") |"; done

echo "== lintian"
for deb in "$amd64" "$arm64" "$armhf"; do
    lintian --allow-root --fail-on error,warning "$deb"
    echo "$deb: lintian clean"
done

echo "== the arm64 and armhf packages"
for pair in "$arm64:arm64:ARM aarch64:qemu-aarch64-static" "$armhf:armhf:ARM, EABI5:qemu-arm-static"; do
    IFS=: read -r deb arch machine qemu <<< "$pair"
    dpkg-deb --info "$deb"
    [ "$(dpkg-deb -f "$deb" Architecture)" = "$arch" ] || fail "$deb is not $arch"
    contents=$(dpkg-deb --contents "$deb")
    grep -q '\./usr/bin/yurt-ota$' <<< "$contents" || fail "$deb has no /usr/bin/yurt-ota"
    dir=$(mktemp -d)
    dpkg-deb -x "$deb" "$dir"
    kind=$(file -b "$dir/usr/bin/yurt-ota")
    echo "$deb: $kind"
    grep -q "$machine" <<< "$kind" || fail "$deb: not $machine"
    v=$("$qemu" "$dir/usr/bin/yurt-ota" --version)
    [ "$v" = "yurt-ota $version" ] || fail "$deb --version said $v"
    echo "$deb: $arch, '$v' under $qemu"
    rm -rf "$dir"
done

echo "== install the amd64 package"
dpkg --purge yurt-ota >/dev/null 2>&1 || true
dpkg -i "$amd64" </dev/null
IFS=: read -r _ _ uid _ _ _ shell <<< "$(getent passwd yurt-ota)" || fail "no user yurt-ota"
[ "$uid" -lt 1000 ] && [ "$shell" = /usr/sbin/nologin ] || fail "yurt-ota is not a system user"
[ "$(id -gn yurt-ota)" = yurt-ota ] || fail "yurt-ota's group"
[ "$(stat -c '%a %U' /usr/bin/yurt-ota)" = "755 root" ] || fail "/usr/bin/yurt-ota mode"
[ "$(stat -c '%a %U' /etc/yurt-ota/config.toml)" = "644 root" ] || fail "config mode"
[ -f /usr/lib/systemd/system/yurt-ota.service ] || fail "no unit"
[ -f /usr/share/doc/yurt-ota/copyright ] || fail "no copyright"
[ -f /usr/share/doc/yurt-ota/changelog.Debian.gz ] || fail "no changelog"
[ -f /usr/share/man/man1/yurt-ota.1.gz ] || fail "no man page"
[[ "$(dpkg-query -W -f='${Conffiles}' yurt-ota)" == *"/etc/yurt-ota/config.toml "* ]] || fail "not a conffile"
/usr/bin/yurt-ota check-config --config /etc/yurt-ota/config.toml >/dev/null
systemd-analyze verify /usr/lib/systemd/system/yurt-ota.service
echo "installed: user, files, modes, conffile, check-config, systemd-analyze verify: ok"

echo "== the installed binary against the simulator"
/usr/bin/yurt-ota run --sim --config /etc/yurt-ota/config.toml 2>/tmp/yurt-ota-sim.log &
agent=$!
trap 'kill $agent 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    /usr/bin/yurt-ota pods >/dev/null 2>&1 && break
    sleep 0.1
done
pods=$(/usr/bin/yurt-ota pods --json)
grep -q '"kind": "PodList"' <<< "$pods" || fail "GET /pods from the installed agent"
/usr/bin/yurt-ota pods --needs-upgrade
kill -TERM $agent
wait $agent
trap - EXIT

echo "== upgrade over a locally modified conffile"
echo '# site change: kept across upgrades' >> /etc/yurt-ota/config.toml
mkdir -p /var/lib/yurt-ota && echo '{}' > /var/lib/yurt-ota/state.json
DEB_REVISION=2 cross/build.sh --deb x86_64-unknown-linux-gnu >/dev/null
dpkg -i "target/debian/yurt-ota_${version}-2_amd64.deb" </dev/null
[ "$(dpkg-query -W -f='${Version}' yurt-ota)" = "${version}-2" ] || fail "not upgraded"
grep -q 'site change: kept across upgrades' /etc/yurt-ota/config.toml || fail "conffile change lost"
echo "upgraded to ${version}-2; the modified conffile was kept"

echo "== remove keeps state, purge removes it"
dpkg -r yurt-ota
[ -f /var/lib/yurt-ota/state.json ] || fail "remove deleted the state"
[ -f /etc/yurt-ota/config.toml ] || fail "remove deleted the conffile"
[ ! -e /usr/bin/yurt-ota ] || fail "remove left the binary"
dpkg --purge yurt-ota
[ ! -e /var/lib/yurt-ota ] || fail "purge left /var/lib/yurt-ota"
[ ! -e /etc/yurt-ota/config.toml ] || fail "purge left the conffile"
echo "remove kept the state and conffile; purge removed them"
