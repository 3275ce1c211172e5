//! The store against real files: reload, corrupt and oversized files, a disk that fails.

use std::time::{Instant, SystemTime};

use super::*;

#[test]
fn changes_persist_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path());
    store.update(|s| {
        s.holds.push(Hold {
            name: "nav".into(),
            reason: "navigation active".into(),
            created_ms: 1,
            expires_ms: 2,
        });
        s.event(SystemTime::now(), "hold_set", None, "nav".into());
    });
    let again = Store::open(dir.path()).get();
    assert_eq!(again, store.get());
    assert_eq!(again.holds[0].name, "nav");
    // No temp file is left behind.
    assert_eq!(names(dir.path()), vec!["intent", "state.json"]);
}

#[test]
fn noted_changes_wait_for_the_next_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path());
    store.note(|s| s.event(SystemTime::now(), "gate_open", None, "a".into()));
    assert!(Store::open(dir.path()).get().events.is_empty());
    store.flush();
    assert_eq!(Store::open(dir.path()).get().events.len(), 1);
    store.note(|s| s.event(SystemTime::now(), "gate_closed", None, "b".into()));
    store.update(|s| s.breaker = None); // no change of its own, but the note is written
    assert_eq!(Store::open(dir.path()).get().events.len(), 2);
}

#[test]
fn a_corrupt_file_is_set_aside_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("state.json"), b"{\"in_flight\": [tru").unwrap();
    let store = Store::open(dir.path());
    let s = store.get();
    assert!(s.in_flight.is_empty());
    assert_eq!(s.events[0].kind, "state_corrupt");
    let aside: Vec<_> = (names(dir.path()).into_iter())
        .filter(|n| n.starts_with("state.json.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1);
    let kept = std::fs::read(dir.path().join(&aside[0])).unwrap();
    assert_eq!(
        kept, b"{\"in_flight\": [tru",
        "the bad bytes are kept as they were"
    );
}

#[test]
fn the_event_log_is_bounded_newest_first() {
    let mut s = State::default();
    for i in 0..MAX_EVENTS + 10 {
        s.event(SystemTime::now(), "x", None, i.to_string());
    }
    assert_eq!(s.events.len(), MAX_EVENTS);
    assert_eq!(s.events[0].message, (MAX_EVENTS + 9).to_string());
}

#[test]
fn a_dir_that_cannot_be_created_makes_the_store_unavailable_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "").unwrap();
    let store = Store::open(&file);
    assert!(store.unavailable().unwrap().contains("not-a-dir"));
    assert!(store.commit(|s| s.breaker = None).is_err());
    // It comes back once the path can be used.
    std::fs::remove_file(&file).unwrap();
    assert!(store.recover(Instant::now()));
    assert!(file.join("state.json").exists());
}

/// The names of the files in `dir`, sorted.
fn names(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn hold(name: &str) -> Hold {
    Hold {
        name: name.into(),
        reason: String::new(),
        created_ms: 0,
        expires_ms: u64::MAX,
    }
}

/// Regression (issue 9, item 7): on a full disk, hold PUTs were answered 200 and lost at the
/// restart. `commit` is durable or changes nothing.
#[test]
fn a_full_disk_loses_nothing_acknowledged_and_recovers_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path());
    store.commit(|s| s.holds.push(hold("a"))).unwrap();
    // The rename onto state.json fails while a directory is in its way, as a write fails
    // on a full disk; this works as root too.
    let file = dir.path().join("state.json");
    std::fs::remove_file(&file).unwrap();
    std::fs::create_dir(&file).unwrap();
    std::fs::write(file.join("x"), "").unwrap();
    let e = store.commit(|s| s.holds.push(hold("b"))).unwrap_err();
    assert!(e.0.contains("state.json"), "{e}");
    assert_eq!(store.get().holds.len(), 1, "not acknowledged: not kept");
    assert!(store.unavailable().is_some());
    // Best-effort records stay in memory for later.
    store.update(|s| s.event(SystemTime::now(), "upgrade_finished", None, "x".into()));
    assert_eq!(store.get().events.len(), 1);
    let now = Instant::now();
    assert!(!store.recover(now));
    std::fs::remove_dir_all(&file).unwrap();
    assert!(!store.recover(now), "not retried before RETRY_EVERY");
    assert!(store.recover(now + RETRY_EVERY));
    assert!(store.unavailable().is_none());
    let again = Store::open(dir.path()).get();
    assert_eq!(again.holds, vec![hold("a")]);
    assert_eq!(
        again.events.len(),
        1,
        "the record kept in memory was written"
    );
    // No temp file, of any name, is left behind after the failures.
    assert_eq!(names(dir.path()), vec!["intent", "state.json"]);
}

#[test]
fn a_file_that_cannot_be_read_is_never_written_over() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state.json");
    std::fs::create_dir(&file).unwrap();
    let store = Store::open(dir.path());
    assert!(store.unavailable().unwrap().contains("cannot read it"));
    assert!(store.commit(|s| s.holds.push(hold("a"))).is_err());
    store.update(|s| s.breaker = None);
    assert!(file.is_dir(), "left as it was");
    std::fs::remove_dir(&file).unwrap();
    std::fs::write(
        &file,
        serde_json::to_vec(&State {
            holds: vec![hold("old")],
            ..State::default()
        })
        .unwrap(),
    )
    .unwrap();
    assert!(store.recover(Instant::now()));
    assert_eq!(
        store.get().holds,
        vec![hold("old")],
        "read once it could be"
    );
}

/// Regression (issue 9, item 8): a 100 MB state file was read whole at start.
#[test]
fn a_state_file_over_the_cap_is_set_aside_without_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state.json");
    // Sparse: its length is over the cap, its bytes are never read.
    std::fs::File::create(&file)
        .unwrap()
        .set_len(MAX_FILE + 1)
        .unwrap();
    let store = Store::open(dir.path());
    assert!(store.unavailable().is_none());
    let s = store.get();
    assert_eq!(s.events[0].kind, "state_corrupt");
    assert!(
        s.events[0].message.contains("over the"),
        "{}",
        s.events[0].message
    );
    let aside: Vec<_> = (names(dir.path()).into_iter())
        .filter(|n| n.contains(".corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1);
    assert_eq!(
        std::fs::metadata(dir.path().join(&aside[0])).unwrap().len(),
        MAX_FILE + 1
    );
}

#[test]
fn a_state_over_the_cap_is_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path());
    let big = "x".repeat(MAX_FILE as usize);
    assert!(store
        .commit(|s| s.event(SystemTime::now(), "x", None, big))
        .unwrap_err()
        .0
        .contains("cap"));
    assert!(store.get().events.is_empty());
}

/// Regression (issue 9, item 10): corrupt files set aside in the same second overwrote
/// each other.
#[test]
fn corrupt_files_set_aside_at_once_keep_distinct_names() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..3 {
        std::fs::write(dir.path().join("state.json"), format!("corrupt {i}")).unwrap();
        Store::open(dir.path());
        // The fresh state written by `open` is what the next round corrupts.
    }
    let mut kept: Vec<String> = (names(dir.path()).into_iter())
        .filter(|n| n.contains(".corrupt-"))
        .map(|n| std::fs::read_to_string(dir.path().join(n)).unwrap())
        .collect();
    kept.sort();
    assert_eq!(kept, vec!["corrupt 0", "corrupt 1", "corrupt 2"]);
}

/// Regression (issue 9, item 8): 10,000 holds made an 11 MB state file.
#[test]
fn holds_are_capped_and_a_name_can_be_reused() {
    let mut s = State::default();
    for i in 0..MAX_HOLDS {
        s.set_hold(hold(&format!("h{i}")), 0).unwrap();
    }
    assert!(s.set_hold(hold("one-more"), 0).unwrap_err().contains("64"));
    s.set_hold(hold("h3"), 0).unwrap();
    assert_eq!(s.holds.len(), MAX_HOLDS);
    // Expired holds do not count.
    s.holds[0].expires_ms = 5;
    s.set_hold(hold("one-more"), 10).unwrap();
}

fn in_flight(uid: &str) -> InFlight {
    InFlight {
        namespace: "kube-system".into(),
        name: format!("pod-{uid}"),
        uid: uid.into(),
        owner_uid: "ds".into(),
        started_ms: 1,
        accepted: false,
        revision: None,
        uncertain: false,
    }
}

fn uids(s: &State) -> Vec<&str> {
    s.in_flight.iter().map(|f| f.uid.as_str()).collect()
}

/// The fast intent (the record alone) survives a crash before the state file takes it in, and
/// is tracked as in flight after the restart: the call is not sent twice.
#[test]
fn an_intent_on_disk_only_in_its_record_is_in_flight_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path());
    let state_file = std::fs::read(dir.path().join("state.json")).unwrap();
    assert_eq!(store.intend(in_flight("a")), Ok(true));
    assert_eq!(store.intend(in_flight("a")), Ok(false), "never twice");
    assert_eq!(
        std::fs::read(dir.path().join("state.json")).unwrap(),
        state_file,
        "the record alone was written"
    );
    drop(store); // a crash: nothing else is written
    let s = Store::open(dir.path()).get();
    assert_eq!(uids(&s), vec!["a"]);
    assert!(!s.in_flight[0].accepted);
    assert_eq!(s.events[0].kind, "intent_resumed");
    assert_eq!(s.intent_seq, 1);
    // Taken in: the next start does not add it again, nor log it.
    let store = Store::open(dir.path());
    store.update(|s| s.in_flight.clear());
    let s = Store::open(dir.path()).get();
    assert!(s.in_flight.is_empty(), "an intent taken in is not resumed");
    assert_eq!(s.events.len(), 1);
}

/// An intent not yet in the state file is never overwritten by the next one: that one goes
/// into the state file.
#[test]
fn a_second_intent_before_the_first_is_taken_in_goes_to_the_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path());
    assert_eq!(store.intend(in_flight("a")), Ok(true));
    assert_eq!(store.intend(in_flight("b")), Ok(true));
    drop(store);
    let s = Store::open(dir.path()).get();
    let mut got = uids(&s);
    got.sort();
    assert_eq!(got, vec!["a", "b"]);
    // Once taken in, the record is used again.
    let store = Store::open(dir.path());
    let before = std::fs::read(dir.path().join("state.json")).unwrap();
    assert_eq!(store.intend(in_flight("c")), Ok(true));
    assert_eq!(
        std::fs::read(dir.path().join("state.json")).unwrap(),
        before
    );
}

/// A record that does not check out (a power cut mid-write) is set aside, as a corrupt state
/// file is, and trips the breaker: a call may have been sent, for a pod not known.
#[test]
fn a_torn_intent_record_is_set_aside_and_trips_the_breaker() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path());
    store.intend(in_flight("a")).unwrap();
    drop(store);
    let path = dir.path().join("intent");
    let mut block = std::fs::read(&path).unwrap();
    block[40..].fill(0);
    std::fs::write(&path, &block).unwrap();
    let store = Store::open(dir.path());
    let s = store.get();
    assert!(s.in_flight.is_empty());
    let reason = &s.breaker.as_ref().expect("tripped").reason;
    assert!(reason.contains("intent record was unusable"), "{reason}");
    assert!(store.unavailable().is_none(), "not fatal");
    let aside: Vec<_> = (names(dir.path()).into_iter())
        .filter(|n| n.starts_with("intent.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1);
    assert_eq!(std::fs::read(dir.path().join(&aside[0])).unwrap(), block);
    // A fresh record, used at once; a file of the wrong size is set aside the same way.
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 4096);
    assert_eq!(store.intend(in_flight("b")), Ok(true));
    drop(store);
    std::fs::write(&path, b"short").unwrap();
    let s = Store::open(dir.path()).get();
    assert!(s.events[0].message.contains("5 bytes"), "{:?}", s.events[0]);
}

/// While the state file cannot be written, no intent is durable: no call.
#[test]
fn no_intent_while_the_state_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path());
    let file = dir.path().join("state.json");
    std::fs::remove_file(&file).unwrap();
    std::fs::create_dir(&file).unwrap();
    std::fs::write(file.join("x"), "").unwrap();
    store.update(|s| s.event(SystemTime::now(), "x", None, "y".into()));
    assert!(store.unavailable().is_some());
    assert!(store.intend(in_flight("a")).is_err());
    assert!(store.get().in_flight.is_empty());
}

#[test]
fn times_are_rfc_3339_in_utc_whole_seconds() {
    use std::time::{Duration, UNIX_EPOCH};
    let at =
        |s: u64, ms: u64| rfc3339(UNIX_EPOCH + Duration::from_secs(s) + Duration::from_millis(ms));
    assert_eq!(at(0, 0), "1970-01-01T00:00:00Z");
    assert_eq!(at(1_795_628_641, 999), "2026-11-25T17:44:01Z");
    assert_eq!(at(951_782_400, 0), "2000-02-29T00:00:00Z");
    assert_eq!(
        rfc3339(UNIX_EPOCH - Duration::from_secs(5)),
        "1970-01-01T00:00:00Z"
    );
}
