//! CAN and value gates with the real binary: `yurt-ota replay` over the recorded drive
//! (../shared/fixtures/can), `check-config`'s resolved layouts and its refusal of a signal the
//! DBC does not have, and a running agent whose CAN interface does not exist (this host has no
//! vcan: the live bus is driven end to end in the VM system test) and whose value gate reads a
//! fake sysfs file.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::node::Node;
use crate::util::*;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/can")
        .join(name)
}

/// examples/vehicle-can.toml with the fixture's DBC in place of /etc/yurt-ota/vehicle.dbc and
/// `stable_for` shortened to fit the drive's 10 s stops.
fn example(dir: &tempfile::TempDir) -> PathBuf {
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/vehicle-can.toml"),
    )
    .unwrap()
    .replace(
        "/etc/yurt-ota/vehicle.dbc",
        fixture("vehicle.dbc").to_str().unwrap(),
    )
    .replace("stable_for = \"30s\"", "stable_for = \"5s\"");
    let path = dir.path().join("vehicle-can.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The fixture's expected timeline: parked (speed < 0.5 and brake Set) in 0-10 s and 40-50 s
/// only, closed from about 51 s (max_age 1s, --until 60).
#[test]
fn replay_over_the_recorded_drive() {
    let dir = tempfile::tempdir().unwrap();
    let config = example(&dir);
    let log = fixture("drive.candump.log");
    let args = |json: bool| {
        let mut a = vec![
            "replay",
            "--config",
            config.to_str().unwrap(),
            "--can-log",
            log.to_str().unwrap(),
            "--until",
            "60",
        ];
        if json {
            a.push("--json");
        }
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let out = Command::new(BIN).args(args(true)).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let changes = |gate: &str| -> Vec<(f64, bool)> {
        let g = v["gates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == gate)
            .unwrap();
        g["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["at"].as_f64().unwrap(), c["open"].as_bool().unwrap()))
            .collect()
    };
    assert_eq!(
        changes("parking-brake"),
        [(0.0, true), (10.0, false), (40.0, true), (50.900001, false)]
    );
    assert_eq!(
        changes("standstill"),
        [(0.0, true), (10.1, false), (30.0, true), (50.900001, false)]
    );
    // Every CAN gate (with the engine's, first seen at 2 ms): 0-10 s and 40-50.9 s.
    let open: Vec<(f64, f64, f64)> = v["all_open"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["from"].as_f64().unwrap(),
                o["to"].as_f64().unwrap(),
                o["upgrade_at"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(open, [(0.002, 10.0, 5.002), (40.0, 50.900001, 45.0)]);
    assert_eq!(
        v["not_replayed"],
        serde_json::json!(["supply-voltage (value)"])
    );

    let out = Command::new(BIN).args(args(false)).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("50.900 s  closed  can0: no frame of CCVS1.ParkingBrakeSwitch"),
        "{text}"
    );
    assert!(
        text.contains("an upgrade could have started at 45.000 s"),
        "{text}"
    );

    let (code, _, err) = run(&["replay", "--config", config.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    let bad = dir.path().join("bad.log");
    std::fs::write(&bad, "(1764950400.000000) can0 3A0#00\ngarbage\n").unwrap();
    let (code, _, err) = run(&[
        "replay",
        "--config",
        config.to_str().unwrap(),
        "--can-log",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("bad.log line 2"), "{err}");
}

#[test]
fn check_config_prints_layouts_and_refuses_unknown_signals_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let config = example(&dir);
    let (code, out, err) = run(&["check-config", "--config", config.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(
        "# resolved: id 0x18FEF100 (29-bit), start_bit 8, 16 bits (8..23), little-endian (Intel), \
         unsigned, physical = raw x 0.00390625 + 0 km/h"
    ), "{out}");
    assert!(
        out.contains("# values: 0 NotSet, 1 Set, 2 Error, 3 NotAvailable"),
        "{out}"
    );
    assert!(
        out.contains("# resolved: J1939 PGN 61444 (0xF004), any priority, source 0x00"),
        "{out}"
    );
    // What it prints reads back as the same configuration.
    let printed = dir.path().join("printed.toml");
    std::fs::write(&printed, &out).unwrap();
    let (code, again, err) = run(&["check-config", "--config", printed.to_str().unwrap()]);
    assert_eq!((code, again.as_str()), (Some(0), out.as_str()), "{err}");

    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("signal = \"ParkingBrakeSwitch\"", "signal = \"ParkBrake\"")
        .replace("open_when = \"< 900\"", "open_when = \"== Idle\"");
    std::fs::write(&config, text).unwrap();
    let (code, _, err) = run(&["check-config", "--config", config.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("`gate[1].signal`: ")
            && err.contains("message CCVS1 has no signal \"ParkBrake\""),
        "{err}"
    );
    assert!(
        err.contains("`gate[2].open_when`: \"Idle\": the signal has no value table"),
        "{err}"
    );
}

/// A running agent: a CAN gate on an interface that does not exist, or that is no CAN
/// interface, reads closed with the reason, and blocks the upgrade; a value gate over a fake sysfs file opens when the file
/// says so.
#[test]
fn a_missing_interface_fails_closed_and_a_value_gate_reads_its_file() {
    let node = Node::start(Duration::from_millis(200), true);
    let dir = tempfile::tempdir().unwrap();
    let capacity = dir.path().join("capacity");
    std::fs::write(&capacity, "15\n").unwrap();
    let config = format!(
        "[upstream]\nurl = \"{}\"\npoll_interval = \"100ms\"\n\
         [policy]\nmode = \"auto\"\nstable_for = \"200ms\"\ngate_check_interval = \"50ms\"\n\
         [[gate]]\nname = \"battery\"\nkind = \"value\"\npath = {:?}\nopen_when = \">= 40\"\n\
         interval = \"100ms\"\n\
         [[gate]]\nname = \"stopped\"\nkind = \"can\"\ninterface = \"yotacan9\"\ndbc = {:?}\n\
         message = \"BODY_SPEED\"\nsignal = \"VehicleSpeed\"\nopen_when = \"< 0.5\"\nsafety = true\n\
         [[gate]]\nname = \"on-lo\"\nkind = \"can\"\ninterface = \"lo\"\nid = 0x3A0\nstart_bit = 7\n\
         length = 16\nbyte_order = \"big\"\nopen_when = \"< 50\"\nsafety = true\n",
        node.url(),
        capacity.display().to_string(),
        fixture("vehicle.dbc").display().to_string()
    );
    let agent = Agent::start(&config);
    let gate = |name: &str| {
        let st = get(&agent.url("/v1/status")).json();
        st["gates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == name)
            .cloned()
            .unwrap()
    };
    wait_for("the CAN gate's error", Duration::from_secs(10), || {
        gate("stopped")["error"]
            .as_str()
            .is_some_and(|e| e.contains("yotacan9: no such CAN interface"))
    });
    assert_eq!(gate("stopped")["open"], false);
    assert!(
        gate("stopped")["watch"]
            .as_str()
            .unwrap()
            .contains("CAN broadcast manager"),
        "{}",
        gate("stopped")
    );
    // An interface that exists but is no CAN interface: the socket fails (no AF_CAN in this
    // kernel, or "No such device" from the BCM where there is), closed with the reason.
    wait_for("the lo gate's error", Duration::from_secs(10), || {
        gate("on-lo")["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("lo: "))
    });
    assert_eq!(gate("on-lo")["open"], false);
    assert_eq!(gate("battery")["open"], false);
    std::fs::write(&capacity, "80\n").unwrap();
    wait_for("the battery gate to open", Duration::from_secs(10), || {
        gate("battery")["open"] == true
    });
    std::thread::sleep(Duration::from_millis(600));
    assert!(node.upgraded().is_empty(), "the CAN gate is closed");
}
