#!/bin/bash
# The system tests inside the guest (run at boot by yurt-system-test.service from the 9p share
# /mnt/host, which tests/system/run.sh fills): the installed package under systemd, a GPIO gate
# on a gpio-sim line, a file gate, the watchdog, a CAN gate on vcan0 driven by can-utils, a
# reboot, reinstall, upgrade and purge.
# Each check appends "name<TAB>ok|FAIL<TAB>seconds<TAB>detail" to results.tsv; run.sh expects
# every name in CHECKS, in this order.
CHECKS="boot gpio-sim install ready-status journal-priority security file-gate gpio-gate watchdog-held watchdog-fires stop-clean can-gate reboot-hold reinstall upgrade purge"
# Exposure threshold for `systemd-analyze security` (the unit scored 2.0 before issue 12).
MAX_EXPOSURE=1.5
set -u
share=/mnt/host
results=$share/results.tsv
phase_file=/var/lib/yurt-system-test/phase
exec >> "$share/guest.log" 2>&1
export PATH=/usr/sbin:/usr/bin:/sbin:/bin SYSTEMD_PAGER= SYSTEMD_COLORS=0
mkdir -p /var/lib/yurt-system-test
# TCG at its slowest is about 3x an idle run: every wait below allows that.
SLOW=${SLOW:-3}

log() { echo "[$(cut -d' ' -f1 /proc/uptime)] $*"; }
detail=""
# check NAME FUNCTION: runs it, times it, records ok or FAIL with $detail.
check() {
    local name=$1 t0 t1 rc
    shift
    detail=""
    log "== $name"
    t0=$(date +%s.%N)
    "$@"
    rc=$?
    t1=$(date +%s.%N)
    local secs
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    if [ $rc -eq 0 ]; then
        printf '%s\tok\t%s\t%s\n' "$name" "$secs" "$detail" >> "$results"
        log "ok: $name ($secs s) $detail"
    else
        printf '%s\tFAIL\t%s\t%s\n' "$name" "$secs" "$detail" >> "$results"
        log "FAIL: $name ($secs s) $detail"
    fi
    sync
    return $rc
}
# wait_until SECONDS COMMAND...: polls every 0.5 s.
wait_until() {
    local end=$(($(date +%s) + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$end" ] || return 1
        sleep 0.5
    done
}
prop() { systemctl show -P "$1" yurt-ota; }
gate_state() { yurt-ota status 2>/dev/null | awk -v g="$1" '$1 == g { print $4 }'; }
gate_is() { [ "$(gate_state "$1")" = "$2" ]; }
upgrades_started() { yurt-ota events --limit 256 --json | grep -c '"kind": "upgrade_started"'; }
events_kept() { yurt-ota events --limit 256 --json | grep -c '"kind": '; }
needing_upgrade() { yurt-ota pods --needs-upgrade | tail -n +2 | grep -c .; }
pull() { echo "$1" > "$sim_line/pull"; }
deb1=$share/yurt-ota-1.deb
deb2=$share/yurt-ota-2.deb
version=$(cat "$share/version")

# ---- first boot ---------------------------------------------------------------------------------
c_boot() { detail="multi-user reached at $(cut -d' ' -f1 /proc/uptime) s uptime, kernel $(uname -r)"; }

sim_line=""
chip=/dev/gpiochip0
c_gpio_sim() {
    insmod /usr/local/lib/gpio-sim.ko || { detail="insmod failed"; return 1; }
    local c=/sys/kernel/config/gpio-sim/agent
    mkdir -p $c/bank0 && echo 8 > $c/bank0/num_lines && mkdir -p $c/bank0/line0 &&
        echo PARK_BRAKE > $c/bank0/line0/name && echo 1 > $c/live || { detail="configfs"; return 1; }
    # The simulated chip is not always gpiochip0 (arm64's virt machine has a PL061 there).
    wait_until $((10 * SLOW)) sh -c 'ls -d /sys/devices/platform/gpio-sim.*/gpiochip*/sim_gpio0' || { detail="no sim_gpio0"; return 1; }
    sim_line=$(ls -d /sys/devices/platform/gpio-sim.*/gpiochip*/sim_gpio0 | head -1)
    chip=/dev/$(basename "$(dirname "$sim_line")")
    wait_until $((10 * SLOW)) test -c "$chip" || { detail="no $chip"; return 1; }
    udevadm settle
    detail="$chip $(stat -c '%A %U:%G' "$chip") before the package"
}

c_install() {
    dpkg -i "$deb1" </dev/null || { detail="dpkg -i failed"; return 1; }
    [ "$(dpkg-query -W -f='${Version}' yurt-ota)" = "$version-1" ] || { detail="version"; return 1; }
    local mode
    mode=$(stat -c '%a %G' "$chip")
    [ "$mode" = "660 gpio" ] || { detail="$chip is $mode, not 660 gpio"; return 1; }
    id -nG yurt-ota | grep -qw gpio || { detail="yurt-ota not in group gpio: $(id -nG yurt-ota)"; return 1; }
    detail="$version-1; $chip $(stat -c '%A %U:%G' "$chip"); yurt-ota in $(id -nG yurt-ota)"
}

c_ready() {
    wait_until $((20 * SLOW)) systemctl is-active --quiet yurt-ota || { detail="not active: $(prop ActiveState)/$(prop SubState)"; return 1; }
    # Type=notify: systemd turns the unit active only on READY=1.
    [ "$(prop Type)" = notify ] || { detail="Type=$(prop Type)"; return 1; }
    local st start ready
    st=$(prop StatusText)
    [ -n "$st" ] || { detail="no STATUS= text"; return 1; }
    start=$(prop ExecMainStartTimestampMonotonic)
    ready=$(prop ActiveEnterTimestampMonotonic)
    detail="READY=1 $(awk -v a="$start" -v b="$ready" 'BEGIN { printf "%.2f", (b - a) / 1e6 }') s after exec; STATUS=$st"
}

c_journal() {
    # As installed (upstream YurtHub, absent here), the agent warns that polling fails.
    local pid
    pid=$(prop MainPID)
    wait_until $((15 * SLOW)) sh -c "journalctl -q -u yurt-ota _PID=$pid -p warning -o cat | grep -q 'polling .* failed'" ||
        { detail="journalctl -p warning shows no agent warning: $(journalctl -q -u yurt-ota -p warning -o cat | tail -2)"; return 1; }
    if journalctl -q -u yurt-ota _PID=$pid -p warning -o cat | grep -q '^INFO'; then detail="INFO lines at warning priority"; return 1; fi
    journalctl -q -u yurt-ota _PID=$pid -p info..info -o cat | grep -q '^INFO: yurt-ota' || { detail="no INFO line at priority 6"; return 1; }
    if journalctl -q -u yurt-ota _PID=$pid -o cat | grep -q '^<[0-7]>'; then detail="a <N> prefix reached the journal text"; return 1; fi
    detail="$(journalctl -q -u yurt-ota _PID=$pid -p warning -o cat | head -1 | cut -c1-80)"
}

c_security() {
    local out score
    out=$(systemd-analyze security --no-pager yurt-ota.service) || { detail="systemd-analyze failed"; return 1; }
    echo "$out" | grep -E '^✗' | head -40
    score=$(echo "$out" | sed -n 's/.*Overall exposure level for yurt-ota.service: \([0-9.]*\).*/\1/p')
    [ -n "$score" ] || { detail="no score"; return 1; }
    detail="exposure $score (threshold $MAX_EXPOSURE)"
    awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s <= m) }'
}

t_watch=0
configure() {
    mkdir -p /run/yurt-system-test
    sed "s|/dev/gpiochip0|$chip|" "$share/config.toml" > /etc/yurt-ota/config.toml
    echo '# site change: kept across reinstall and upgrade' >> /etc/yurt-ota/config.toml
    yurt-ota check-config --config /etc/yurt-ota/config.toml >/dev/null 2>/tmp/check-config.err || return 1
    # The chip is there and the service user can open it: check-config has nothing to say.
    if grep . /tmp/check-config.err; then return 1; fi
    pull pull-down
    systemctl restart yurt-ota || return 1
    t_watch=$(date +%s)
    wait_until $((30 * SLOW)) sh -c 'yurt-ota status | grep -q "^pods: .* 3 need upgrade"'
}

c_file_gate() {
    configure || { detail="configure/restart with the test config failed"; return 1; }
    gate_is parked closed || { detail="parked not closed at start: $(gate_state parked)"; return 1; }
    touch /run/yurt-system-test/parked
    wait_until $((5 * SLOW)) gate_is parked open || { detail="touch: parked stays $(gate_state parked)"; return 1; }
    rm /run/yurt-system-test/parked
    wait_until $((5 * SLOW)) gate_is parked closed || { detail="rm: parked stays $(gate_state parked)"; return 1; }
    [ "$(upgrades_started)" = 0 ] || { detail="an upgrade started"; return 1; }
    detail="/run/yurt-system-test/parked: touch opens, rm closes"
}

c_gpio_gate() {
    [ -n "$sim_line" ] || { detail="no gpio-sim line"; return 1; }
    touch /run/yurt-system-test/parked
    pull pull-down
    wait_until $((5 * SLOW)) gate_is park-brake closed || { detail="pull-down: $(gate_state park-brake)"; return 1; }
    if yurt-ota status | grep park-brake | grep -qi 'denied'; then detail="permission denied: $(yurt-ota status | grep park-brake)"; return 1; fi
    pull pull-up
    wait_until $((5 * SLOW)) gate_is park-brake open || { detail="pull-up: $(yurt-ota status | grep park-brake)"; return 1; }
    local t_open t_up
    t_open=$(date +%s)
    # stable_for is 10 s: the first outdated pod's upgrade starts then.
    wait_until $((10 + 10 * SLOW)) sh -c '[ "$(yurt-ota events --limit 256 --json | grep -c "\"kind\": \"upgrade_started\"")" -ge 1 ]' ||
        { detail="no upgrade after pull-up: $(yurt-ota status | grep -i 'gates\|need')"; return 1; }
    t_up=$(($(date +%s) - t_open))
    pull pull-down
    wait_until $((5 * SLOW)) gate_is park-brake closed || { detail="pull-down again: $(gate_state park-brake)"; return 1; }
    local n
    n=$(upgrades_started)
    # The one in flight finishes; nothing else starts while the line is low.
    sleep $((10 * SLOW))
    [ "$(upgrades_started)" = "$n" ] || { detail="$(upgrades_started) upgrades started after pull-down (was $n)"; return 1; }
    [ "$n" = 1 ] || { detail="$n upgrades started in the open window"; return 1; }
    [ "$(needing_upgrade)" = 2 ] || { detail="$(needing_upgrade) pods need upgrade, not 2"; return 1; }
    detail="pull-down closed, pull-up opened; upgrade ${t_up}s after opening (stable_for 10s); 1 upgraded, 2 still outdated after pull-down"
}

c_watchdog_held() {
    local left=$((t_watch + 120 - $(date +%s)))
    [ $left -le 0 ] || sleep $left
    systemctl is-active --quiet yurt-ota || { detail="not active"; return 1; }
    [ "$(prop NRestarts)" = 0 ] || { detail="NRestarts=$(prop NRestarts)"; return 1; }
    [ "$(prop WatchdogUSec)" != 0 ] || { detail="no watchdog"; return 1; }
    detail="$(($(date +%s) - t_watch)) s active, NRestarts=0, WatchdogUSec=$(prop WatchdogUSec)"
}

c_watchdog_fires() {
    yurt-ota hold system-test --ttl 2h --reason "must survive" || { detail="hold"; return 1; }
    local pid holds_before events_before t0
    holds_before=$(yurt-ota holds | grep -c system-test)
    events_before=$(events_kept)
    pid=$(prop MainPID)
    t0=$(date +%s)
    kill -STOP "$pid"
    wait_until $((60 * SLOW)) sh -c '[ "$(systemctl show -P NRestarts yurt-ota)" -ge 1 ] && systemctl is-active --quiet yurt-ota' ||
        { detail="no watchdog restart: $(prop ActiveState) NRestarts=$(prop NRestarts)"; kill -CONT "$pid"; return 1; }
    local took=$(($(date +%s) - t0))
    journalctl -q -u yurt-ota -o cat | grep -q 'Watchdog timeout' || { detail="no 'Watchdog timeout' in the journal"; return 1; }
    [ "$(prop MainPID)" != "$pid" ] || { detail="same pid"; return 1; }
    wait_until $((10 * SLOW)) sh -c 'yurt-ota holds | grep -q system-test' || { detail="hold lost over the restart"; return 1; }
    [ "$holds_before" = 1 ] || { detail="hold not listed before"; return 1; }
    [ "$(events_kept)" -ge "$events_before" ] && [ "$events_before" -ge 1 ] ||
        { detail="event log lost: $events_before events before, $(events_kept) after"; return 1; }
    detail="SIGSTOP to restart in ${took}s (WatchdogSec=30s); hold and event log kept"
}

c_stop() {
    local t0 took
    t0=$(date +%s.%N)
    systemctl stop yurt-ota || { detail="stop failed"; return 1; }
    took=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
    [ "$(prop Result)" = success ] || { detail="Result=$(prop Result)"; return 1; }
    [ "$(prop ExecMainCode)" = 1 ] && [ "$(prop ExecMainStatus)" = 0 ] ||
        { detail="exit code $(prop ExecMainCode)/$(prop ExecMainStatus)"; return 1; }
    systemctl start yurt-ota || { detail="start again failed"; return 1; }
    detail="stopped in ${took}s, exit status 0, Result=success"
}

# A CAN gate end to end: vcan0, BODY_SPEED-style frames (0x3A0, big-endian speed in 0.01 km/h)
# sent at 100 Hz by cangen. Upgrades go through only while the frames say parked, never while
# they say moving, and not after the frames stop. Its own config and state directory (the
# hold of watchdog-fires must not block it, and must still be there after the reboot); the
# test's config is put back at the end. Also read: the agent's wake-ups (context switches of
# all its threads) while a steady 100 Hz frame is on the bus.
can_frames() { # DATA (hex, its length the frame's): cangen at 100 Hz in the background, replacing any running
    [ -z "${cangen_pid:-}" ] || { kill "$cangen_pid"; wait "$cangen_pid" 2>/dev/null; }
    cangen_pid=""
    [ -z "$1" ] && return 0
    cangen vcan0 -I 3A0 -L $((${#1} / 2)) -D "$1" -g 10 &
    cangen_pid=$!
}
cpu_ticks() { # the agent's CPU time, all threads: utime + stime in clock ticks (/proc/PID/stat)
    awk '{ print $14 + $15 }' /proc/"$(prop MainPID)"/stat
}
switches() { # all threads of the agent: voluntary + involuntary context switches
    cat /proc/"$(prop MainPID)"/task/*/status | awk '/ctxt_switches/ { n += $2 } END { print n }'
}
# The CAN checks' config: the simulator, `$1` (a [policy] section or nothing) and one safety
# gate "stopped" on vcan0 whose frame and signal are `$2`; checked, then the agent restarted.
can_test_config() {
    cat > /etc/yurt-ota/config.toml <<CONF
[upstream]
kind = "sim"
poll_interval = "2s"
$1
[state]
dir = "/var/lib/yurt-ota/can-test"
[[gate]]
name = "stopped"
kind = "can"
interface = "vcan0"
$2
unit = "km/h"
open_when = "< 0.5"
max_age = "1s"
safety = true
CONF
    yurt-ota check-config --config /etc/yurt-ota/config.toml >/dev/null || { detail="check-config: $2"; return 1; }
    systemctl restart yurt-ota || { detail="restart with the CAN gate: $2"; return 1; }
}
c_can_gate() {
    modprobe vcan && modprobe can-bcm && modprobe can-raw || { detail="modprobe vcan/can-bcm/can-raw"; return 1; }
    ip link add dev vcan0 type vcan && ip link set up vcan0 || { detail="vcan0"; return 1; }
    # The idle figure to compare with: the test config (file and GPIO gates, no CAN gate).
    local i0 i1 idle
    i0=$(switches); sleep 10; i1=$(switches)
    idle=$(awk -v a="$i0" -v b="$i1" 'BEGIN { printf "%.1f", (b - a) / 10 }')
    cp /etc/yurt-ota/config.toml /run/yurt-system-test/config.saved
    can_test_config '[policy]
mode = "auto"
stable_for = "5s"' 'id = 0x3A0
start_bit = 7
length = 16
byte_order = "big"
factor = 0.01' || return 1
    wait_until $((30 * SLOW)) sh -c 'yurt-ota status | grep -q "^pods: .* 3 need upgrade"' || { detail="no pods"; return 1; }
    gate_is stopped closed || { detail="open with no frame: $(gate_state stopped)"; return 1; }
    # Moving: 50 km/h (0x1388) at 100 Hz.
    can_frames 1388000000000000
    wait_until $((5 * SLOW)) sh -c 'yurt-ota status | grep stopped | grep -q "50 km/h"' || { detail="moving not seen: $(yurt-ota status | grep stopped)"; can_frames ""; return 1; }
    local s0 s1 wake b0 b1 bcm_cpu
    s0=$(switches); b0=$(cpu_ticks); sleep 10; s1=$(switches); b1=$(cpu_ticks)
    wake=$(awk -v a="$s0" -v b="$s1" 'BEGIN { printf "%.1f", (b - a) / 10 }')
    # The same 10 s in CPU time, per second: what the agent costs with the BCM filtering.
    bcm_cpu=$(awk -v a="$b0" -v b="$b1" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", (b - a) / hz * 1000 / 10 }')
    sleep $((5 * SLOW))
    [ "$(upgrades_started)" = 0 ] || { detail="an upgrade started while moving"; can_frames ""; return 1; }
    # Parked: 0 km/h. The latency: from just before the first parked frame to the agent's log
    # line "gate stopped open" (journal timestamps).
    local t_park latency
    t_park=$(date +%s.%N)
    can_frames 0000000000000000
    wait_until $((5 * SLOW)) gate_is stopped open || { detail="parked: $(yurt-ota status | grep stopped)"; can_frames ""; return 1; }
    latency=$(journalctl -q -u yurt-ota -o short-unix --since "@${t_park%.*}" | grep -m1 'gate stopped open' |
        awk -v a="$t_park" '{ printf "%.0f", ($1 - a) * 1000 }')
    wait_until $((5 + 10 * SLOW)) sh -c '[ "$(yurt-ota events --limit 256 --json | grep -c "\"kind\": \"upgrade_started\"")" -ge 1 ]' ||
        { detail="no upgrade while parked"; can_frames ""; return 1; }
    # The frames stop: closed within max_age (1 s), and nothing more starts.
    can_frames ""
    wait_until $((3 * SLOW)) gate_is stopped closed || { detail="frames stopped: $(yurt-ota status | grep stopped)"; return 1; }
    local n
    n=$(upgrades_started)
    sleep $((10 * SLOW))
    [ "$(upgrades_started)" = "$n" ] || { detail="$(upgrades_started) upgrades after the frames stopped (was $n)"; return 1; }
    [ "$(needing_upgrade)" -ge 1 ] || { detail="every pod upgraded: the window was too long to tell"; return 1; }
    # Frames too short for the signal: closed, and it says so. (cansend: one frame by hand.)
    cansend vcan0 3A0#00 || { detail="cansend"; return 1; }
    can_frames 00
    wait_until $((3 * SLOW)) sh -c 'yurt-ota status | grep stopped | grep -q "too short"' || { detail="short frame: $(yurt-ota status | grep stopped)"; can_frames ""; return 1; }
    can_frames ""
    # A J1939 gate by PGN from any source address: no BCM there (it takes exact ids), a raw
    # socket with a kernel filter on the PGN, and every matching frame read by the agent's CAN
    # thread. Its cost per frame: the agent's CPU time (utime + stime, all threads) over 20 s of
    # CCVS1 (PGN 65265, wheel-based speed 0) at 100 Hz, divided by the frames sent.
    can_test_config "" 'pgn = 65265
start_bit = 8
length = 16
byte_order = "little"
factor = 0.00390625' || return 1
    wait_until $((30 * SLOW)) sh -c 'yurt-ota status >/dev/null' || { detail="PGN gate: no status"; return 1; }
    cangen vcan0 -e -I 18FEF103 -L 8 -D 0000000000000000 -g 10 &
    cangen_pid=$!
    wait_until $((5 * SLOW)) gate_is stopped open || { detail="PGN gate: $(yurt-ota status | grep stopped)"; can_frames ""; return 1; }
    local c0 c1 w0 w1 per_frame pgn_wake
    c0=$(cpu_ticks); w0=$(switches); sleep 20; c1=$(cpu_ticks); w1=$(switches)
    can_frames ""
    per_frame=$(awk -v a="$c0" -v b="$c1" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", (b - a) / hz * 1e6 / 2000 }')
    pgn_wake=$(awk -v a="$w0" -v b="$w1" 'BEGIN { printf "%.1f", (b - a) / 20 }')
    detail="moving: closed, 0 upgrades; parked: $n upgrade(s) started; frames stopped: closed, none after; short frame: closed; agent context switches: ${wake}/s at 100 Hz steady (idle, no CAN gate: ${idle}/s), CPU ${bcm_cpu} ms/s; parked frame to gate open: ${latency:-?} ms; J1939 PGN gate (raw socket) at 100 Hz: ${per_frame} us CPU per frame (all the agent's CPU over the frames; under TCG emulation), ${pgn_wake} context switches/s"
    cp /run/yurt-system-test/config.saved /etc/yurt-ota/config.toml
    ip link del vcan0
    systemctl restart yurt-ota
    wait_until $((20 * SLOW)) systemctl is-active --quiet yurt-ota || { detail="not active with the test config again"; return 1; }
}

# ---- second boot ------------------------------------------------------------------------------
c_reboot_hold() {
    wait_until $((20 * SLOW)) systemctl is-active --quiet yurt-ota || { detail="not active after reboot"; return 1; }
    wait_until $((10 * SLOW)) sh -c 'yurt-ota holds | grep -q system-test' || { detail="hold gone after reboot: $(yurt-ota holds)"; return 1; }
    detail="hold system-test kept; boot to multi-user $(cut -d' ' -f1 /proc/uptime) s"
}

conf_sum=""
kept() {
    local what=$1
    [ "$(sha256sum < /etc/yurt-ota/config.toml)" = "$conf_sum" ] || { detail="$what: conffile changed"; return 1; }
    grep -q 'site change' /etc/yurt-ota/config.toml || { detail="$what: site change lost"; return 1; }
    wait_until $((20 * SLOW)) systemctl is-active --quiet yurt-ota || { detail="$what: not active"; return 1; }
    wait_until $((10 * SLOW)) sh -c 'yurt-ota holds | grep -q system-test' || { detail="$what: hold lost"; return 1; }
    id -nG yurt-ota | grep -qw gpio || { detail="$what: yurt-ota left group gpio"; return 1; }
}

c_reinstall() {
    conf_sum=$(sha256sum < /etc/yurt-ota/config.toml)
    dpkg -i "$deb1" </dev/null || { detail="dpkg -i again failed"; return 1; }
    kept reinstall || return 1
    detail="state (hold), modified conffile, group kept"
}

c_upgrade() {
    dpkg -i "$deb2" </dev/null || { detail="dpkg -i -2 failed"; return 1; }
    [ "$(dpkg-query -W -f='${Version}' yurt-ota)" = "$version-2" ] || { detail="not upgraded"; return 1; }
    kept upgrade || return 1
    detail="$version-1 to $version-2; state, modified conffile, group kept"
}

c_purge() {
    dpkg --purge yurt-ota || { detail="purge failed"; return 1; }
    [ ! -e /var/lib/yurt-ota ] || { detail="/var/lib/yurt-ota left"; return 1; }
    [ ! -e /etc/yurt-ota/config.toml ] || { detail="conffile left"; return 1; }
    [ ! -e /usr/bin/yurt-ota ] || { detail="binary left"; return 1; }
    ! systemctl is-active --quiet yurt-ota || { detail="unit still active"; return 1; }
    detail="state, conffile, binary and unit gone"
}

phase=$(cat "$phase_file" 2>/dev/null || echo 1)
log "yurt-ota system tests, phase $phase, $(uname -m), $(systemctl --version | head -1)"
if [ "$phase" = 1 ]; then
    : > "$results"
    check boot c_boot
    check gpio-sim c_gpio_sim
    check install c_install
    check ready-status c_ready
    check journal-priority c_journal
    check security c_security
    check file-gate c_file_gate
    check gpio-gate c_gpio_gate
    check watchdog-held c_watchdog_held
    check watchdog-fires c_watchdog_fires
    check stop-clean c_stop
    check can-gate c_can_gate
    journalctl -q -u yurt-ota -o short-monotonic > "$share/journal-1.log"
    echo 2 > "$phase_file"
    sync
    log "rebooting"
    systemctl reboot
else
    check reboot-hold c_reboot_hold
    check reinstall c_reinstall
    check upgrade c_upgrade
    journalctl -q -b -u yurt-ota -o short-monotonic > "$share/journal-2.log"
    check purge c_purge
    echo done > "$phase_file"
    sync
    log "powering off"
    systemctl poweroff
fi
