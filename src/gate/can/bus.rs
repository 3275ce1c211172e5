//! The SocketCAN side of CAN gates, kept small: one broadcast-manager (`CAN_BCM`) socket per
//! interface, whatever the number of CAN gates on it, and a raw socket with kernel id filters
//! only where a gate matches a J1939 PGN (any priority, perhaps any source: the BCM takes exact
//! ids only).
//!
//! The BCM is asked (`RX_SETUP`) for each id with the gates' bits as a content filter, the
//! frame length checked, and the shortest `max_age` of those gates as a timeout: the kernel
//! wakes us only when those bits (or the length) change, or when the frame stops coming
//! (`RX_TIMEOUT`). A steady 100 Hz speed frame costs no wake-up of ours.
//!
//! What the bus said lands in each gate's `Slot`; a gate reads it there (`super::judge`), so
//! tests fill slots directly, with no socket.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::mem::{offset_of, size_of};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use libc::{bcm_msg_head, can_frame};
use socketcan::Socket as _;
use socketcan::SocketOptions as _;

use super::decode::FrameId;
use super::Latest;
use crate::gate::Bell;

/// What one gate's signal last said; written by the interface's thread, read by the gate.
pub type Slot = Arc<Mutex<Latest>>;

/// Before retrying an interface that failed (missing, down, bus-off).
const RETRY: Duration = Duration::from_secs(2);

struct Sub {
    frame: FrameId,
    mask: [u8; 8],
    max_age: Duration,
    slot: Slot,
}

/// One interface's subscriptions, and whether its threads run.
#[derive(Default)]
struct Bus {
    subs: Vec<Sub>,
    bell: Option<Arc<Bell>>,
    started: bool,
}

static BUSES: Mutex<BTreeMap<String, Arc<Mutex<Bus>>>> = Mutex::new(BTreeMap::new());

fn bus(interface: &str) -> Arc<Mutex<Bus>> {
    let mut all = BUSES.lock().unwrap_or_else(|e| e.into_inner());
    all.entry(interface.to_owned()).or_default().clone()
}

/// Registers a gate's signal on `interface`: its frames, the bits it reads and its `max_age`.
/// The threads start at the first `start` on the interface, with every gate registered by then
/// (the gates are all built before they are watched).
pub fn subscribe(interface: &str, frame: FrameId, mask: [u8; 8], max_age: Duration) -> Slot {
    let slot = Slot::default();
    let b = bus(interface);
    let mut b = b.lock().unwrap_or_else(|e| e.into_inner());
    b.subs.push(Sub {
        frame,
        mask,
        max_age,
        slot: slot.clone(),
    });
    slot
}

/// Starts the interface's threads, once; `bell` (when given) is rung at each change.
pub fn start(interface: &str, bell: Option<Arc<Bell>>) {
    let b = bus(interface);
    let mut guard = b.lock().unwrap_or_else(|e| e.into_inner());
    if bell.is_some() {
        guard.bell = bell;
    }
    if std::mem::replace(&mut guard.started, true) {
        return;
    }
    let exact = guard.subs.iter().any(|s| s.frame.kernel_id().is_some());
    let pgn = guard.subs.iter().any(|s| s.frame.kernel_id().is_none());
    drop(guard);
    let spawn = |name: &str, f: fn(&str, &Arc<Mutex<Bus>>)| {
        let (iface, b) = (interface.to_owned(), b.clone());
        let _ = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || f(&iface, &b))
            .map_err(|e| log::warn!("{interface}: cannot start a CAN thread: {e}"));
    };
    if exact {
        spawn("can-bcm", run_bcm);
    }
    if pgn {
        spawn("can-raw", run_raw);
    }
}

/// Sets `f` on the slots of the subscriptions `pick` selects, and rings when any changed.
fn update(b: &Arc<Mutex<Bus>>, pick: impl Fn(&Sub) -> bool, f: impl Fn(&mut Latest)) {
    let b = b.lock().unwrap_or_else(|e| e.into_inner());
    let mut changed = false;
    for s in b.subs.iter().filter(|s| pick(s)) {
        let mut l = s.slot.lock().unwrap_or_else(|e| e.into_inner());
        let before = l.clone();
        f(&mut l);
        changed |=
            l.data != before.data || l.timed_out != before.timed_out || l.error != before.error;
    }
    if changed {
        if let Some(bell) = &b.bell {
            bell.ring();
        }
    }
}

/// An interface that fails closes every gate on it, with the reason.
fn fail(b: &Arc<Mutex<Bus>>, exact: bool, msg: String) {
    update(
        b,
        |s| s.frame.kernel_id().is_some() == exact,
        |l| {
            if l.error.as_deref() != Some(&msg) {
                log::warn!("{msg}");
            }
            l.error = Some(msg.clone());
        },
    );
}

/// Closes the gates of a thread that ends, even by a panic: a slot the kernel watches is
/// trusted until told otherwise, so nobody left to tell must read closed, not stay open.
struct Ended<'a> {
    interface: &'a str,
    bus: &'a Arc<Mutex<Bus>>,
    exact: bool,
}

impl Drop for Ended<'_> {
    fn drop(&mut self) {
        let msg = format!(
            "{}: the CAN thread ended; restart the agent",
            self.interface
        );
        fail(self.bus, self.exact, msg);
    }
}

/// A socket's session until it fails (it never ends otherwise).
type Session = fn(&str, &Arc<Mutex<Bus>>) -> Result<std::convert::Infallible, std::io::Error>;

/// One of an interface's threads: runs `session`; when it fails, closes the gates it serves
/// (`exact`: the BCM's, else the PGN gates') with the reason, and starts it again.
fn run(interface: &str, b: &Arc<Mutex<Bus>>, exact: bool, session: Session) {
    let _ended = Ended {
        interface,
        bus: b,
        exact,
    };
    loop {
        let Err(e) = session(interface, b);
        fail(b, exact, format!("{interface}: {e}"));
        std::thread::sleep(RETRY);
    }
}

/// The BCM thread: set up, read changes and timeouts.
fn run_bcm(interface: &str, b: &Arc<Mutex<Bus>>) {
    run(interface, b, true, bcm_session);
}

/// One RX_SETUP per id: the union of the gates' bits, the shortest of their `max_age`s.
fn setups(b: &Arc<Mutex<Bus>>) -> BTreeMap<u32, ([u8; 8], Duration)> {
    let b = b.lock().unwrap_or_else(|e| e.into_inner());
    let mut out: BTreeMap<u32, ([u8; 8], Duration)> = BTreeMap::new();
    for s in &b.subs {
        let Some(id) = s.frame.kernel_id() else {
            continue;
        };
        let e = out.entry(id).or_insert(([0; 8], s.max_age));
        for (m, bits) in e.0.iter_mut().zip(s.mask) {
            *m |= bits;
        }
        e.1 = e.1.min(s.max_age);
    }
    out
}

/// Runs until the socket fails (it never ends otherwise).
fn bcm_session(
    interface: &str,
    b: &Arc<Mutex<Bus>>,
) -> Result<std::convert::Infallible, std::io::Error> {
    let addr = socketcan::CanAddr::from_iface(interface)
        .map_err(|e| std::io::Error::new(e.kind(), format!("no such CAN interface ({e})")))?;
    let sock = socket2_05::Socket::new(
        socket2_05::Domain::from(libc::AF_CAN),
        socket2_05::Type::DGRAM,
        Some(socket2_05::Protocol::from(libc::CAN_BCM)),
    )?;
    sock.connect(&addr.into_sock_addr())?;
    for (id, (mask, timeout)) in setups(b) {
        (&sock).write_all(&rx_setup(id, mask, timeout))?;
    }
    log::info!("{interface}: CAN broadcast manager set up, told only of changes and timeouts");
    let mut buf = vec![0u8; msg_len()];
    loop {
        let n = (&sock).read(&mut buf)?;
        let Some(msg) = parse(&buf[..n]) else {
            continue;
        };
        let now = SystemTime::now();
        let at_id = |s: &Sub| s.frame.kernel_id() == Some(msg.can_id);
        match msg.opcode {
            libc::RX_CHANGED => update(b, at_id, |l| {
                l.data = Some(msg.data.clone());
                l.at = Some(now);
                l.watched = true;
                l.timed_out = false;
                l.error = None;
            }),
            libc::RX_TIMEOUT => update(b, at_id, |l| {
                l.watched = true;
                l.timed_out = true;
                l.error = None;
            }),
            _ => {}
        }
    }
}

/// The raw-socket thread, for PGN gates: a kernel filter per PGN; each frame that passes is
/// read here (the cost per frame is ours), the gate rung only when its bits changed.
fn run_raw(interface: &str, b: &Arc<Mutex<Bus>>) {
    run(interface, b, false, raw_session);
}

fn raw_session(
    interface: &str,
    b: &Arc<Mutex<Bus>>,
) -> Result<std::convert::Infallible, std::io::Error> {
    let sock = socketcan::CanSocket::open(interface)?;
    let filters: Vec<socketcan::CanFilter> = {
        let b = b.lock().unwrap_or_else(|e| e.into_inner());
        b.subs
            .iter()
            .filter(|s| s.frame.kernel_id().is_none())
            .map(|s| {
                let (id, mask) = s.frame.raw_filter();
                socketcan::CanFilter::new(id, mask)
            })
            .collect()
    };
    sock.set_filters(&filters)?;
    log::info!(
        "{interface}: raw CAN socket with {} J1939 PGN filter(s)",
        filters.len()
    );
    loop {
        let frame = sock.read_raw_frame()?;
        if frame.can_id & super::decode::RTR_FLAG != 0 {
            continue;
        }
        let len = usize::from(frame.can_dlc).min(8);
        let data = frame.data[..len].to_vec();
        let now = SystemTime::now();
        update(
            b,
            |s| s.frame.kernel_id().is_none() && s.frame.matches(frame.can_id),
            |l| {
                l.data = Some(data.clone());
                l.at = Some(now);
                l.watched = false;
                l.timed_out = false;
                l.error = None;
            },
        );
    }
}

/// A BCM message with room for one classic frame.
fn msg_len() -> usize {
    offset_of!(bcm_msg_head, frames) + size_of::<can_frame>()
}

fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_long(buf: &mut [u8], at: usize, v: libc::c_long) {
    let b = v.to_ne_bytes();
    buf[at..at + b.len()].copy_from_slice(&b);
}

/// `RX_SETUP` for `can_id`: tell of changes in `mask`'s bits or in the frame length, and of a
/// silence longer than `timeout` (then of the first frame after it).
pub fn rx_setup(can_id: u32, mask: [u8; 8], timeout: Duration) -> Vec<u8> {
    let mut buf = vec![0u8; msg_len()];
    put_u32(&mut buf, offset_of!(bcm_msg_head, opcode), libc::RX_SETUP);
    let flags = libc::SETTIMER | libc::STARTTIMER | libc::RX_CHECK_DLC | libc::RX_ANNOUNCE_RESUME;
    put_u32(&mut buf, offset_of!(bcm_msg_head, flags), flags);
    let ival1 = offset_of!(bcm_msg_head, ival1);
    let usec = offset_of!(libc::bcm_timeval, tv_usec);
    put_long(&mut buf, ival1, timeout.as_secs() as libc::c_long);
    put_long(
        &mut buf,
        ival1 + usec,
        timeout.subsec_micros() as libc::c_long,
    );
    put_u32(&mut buf, offset_of!(bcm_msg_head, can_id), can_id);
    put_u32(&mut buf, offset_of!(bcm_msg_head, nframes), 1);
    let frame = offset_of!(bcm_msg_head, frames);
    put_u32(&mut buf, frame + offset_of!(can_frame, can_id), can_id);
    buf[frame + offset_of!(can_frame, can_dlc)] = 8;
    let data = frame + offset_of!(can_frame, data);
    buf[data..data + 8].copy_from_slice(&mask);
    buf
}

/// A message from the BCM: what happened, to which id, and the frame for `RX_CHANGED`.
#[derive(Debug, PartialEq)]
pub struct BcmMsg {
    pub opcode: u32,
    pub can_id: u32,
    pub data: Vec<u8>,
}

pub fn parse(buf: &[u8]) -> Option<BcmMsg> {
    let get = |at: usize| Some(u32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?));
    let opcode = get(offset_of!(bcm_msg_head, opcode))?;
    let can_id = get(offset_of!(bcm_msg_head, can_id))?;
    let nframes = get(offset_of!(bcm_msg_head, nframes))?;
    let frame = offset_of!(bcm_msg_head, frames);
    let data = if nframes >= 1 && buf.len() >= frame + size_of::<can_frame>() {
        let len = usize::from(buf[frame + offset_of!(can_frame, can_dlc)]).min(8);
        let at = frame + offset_of!(can_frame, data);
        buf[at..at + len].to_vec()
    } else {
        Vec::new()
    };
    Some(BcmMsg {
        opcode,
        can_id,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gates on one id share one RX_SETUP: the union of their bits, the shortest `max_age`;
    /// PGN gates are not the BCM's.
    #[test]
    fn gates_on_one_id_share_one_setup() {
        let b = Arc::new(Mutex::new(Bus::default()));
        let sub = |frame: FrameId, mask: [u8; 8], ms: u64| Sub {
            frame,
            mask,
            max_age: Duration::from_millis(ms),
            slot: Slot::default(),
        };
        let ccvs1 = FrameId::Exact {
            id: 0x18FE_F100,
            extended: true,
        };
        {
            let mut g = b.lock().unwrap();
            g.subs
                .push(sub(ccvs1.clone(), [0x0C, 0, 0, 0, 0, 0, 0, 0], 1000));
            g.subs.push(sub(ccvs1, [0, 0xFF, 0xFF, 0, 0, 0, 0, 0], 500));
            let speed = FrameId::Exact {
                id: 0x3A0,
                extended: false,
            };
            g.subs
                .push(sub(speed, [0xFF, 0xFF, 0, 0, 0, 0, 0, 0], 2000));
            let pgn = FrameId::Pgn {
                pgn: 61444,
                source: None,
            };
            g.subs.push(sub(pgn, [0; 8], 100));
        }
        let s = setups(&b);
        assert_eq!(s.len(), 2);
        assert_eq!(
            s[&(0x18FE_F100 | super::super::decode::EFF_FLAG)],
            (
                [0x0C, 0xFF, 0xFF, 0, 0, 0, 0, 0],
                Duration::from_millis(500)
            )
        );
        assert_eq!(
            s[&0x3A0],
            ([0xFF, 0xFF, 0, 0, 0, 0, 0, 0], Duration::from_secs(2))
        );
    }

    /// A thread that ends (here: its guard dropped as a panic would drop it) closes its gates.
    #[test]
    fn a_thread_that_ends_closes_its_gates() {
        let b = Arc::new(Mutex::new(Bus::default()));
        let slot = Slot::default();
        *slot.lock().unwrap() = Latest {
            data: Some(vec![0]),
            at: Some(SystemTime::now()),
            watched: true,
            ..Latest::default()
        };
        b.lock().unwrap().subs.push(Sub {
            frame: FrameId::Exact {
                id: 0x3A0,
                extended: false,
            },
            mask: [0xFF; 8],
            max_age: Duration::from_secs(1),
            slot: slot.clone(),
        });
        let bell = Bell::new();
        b.lock().unwrap().bell = Some(bell.clone());
        drop(Ended {
            interface: "can0",
            bus: &b,
            exact: true,
        });
        assert_eq!(
            slot.lock().unwrap().error.as_deref(),
            Some("can0: the CAN thread ended; restart the agent")
        );
        assert!(!bell.wait(Duration::from_secs(5)), "rung, not stopped");
    }

    /// The message we write is the kernel's `struct bcm_msg_head` + one `struct can_frame`, as
    /// libc lays them out on this target (56 + 16 bytes on 64-bit Linux).
    #[test]
    fn rx_setup_is_laid_out_as_the_kernel_reads_it() {
        let m = rx_setup(
            0x18FE_F100 | super::super::decode::EFF_FLAG,
            [0x0C, 0xFF, 0xFF, 0, 0, 0, 0, 0],
            Duration::from_millis(1500),
        );
        if cfg!(target_pointer_width = "64") {
            assert_eq!(m.len(), 72);
            assert_eq!(&m[0..4], &libc::RX_SETUP.to_ne_bytes());
            assert_eq!(&m[4..8], &0x0143u32.to_ne_bytes(), "flags");
            assert_eq!(&m[16..24], &1i64.to_ne_bytes(), "timeout seconds");
            assert_eq!(
                &m[24..32],
                &500_000i64.to_ne_bytes(),
                "timeout microseconds"
            );
            assert_eq!(&m[48..52], &0x98FE_F100u32.to_ne_bytes());
            assert_eq!(&m[52..56], &1u32.to_ne_bytes());
            assert_eq!(m[60], 8, "dlc");
            assert_eq!(&m[64..67], &[0x0C, 0xFF, 0xFF]);
        }
        // What the kernel sends back has the same shape: our parser reads our own message.
        let back = parse(&m).unwrap();
        assert_eq!(back.can_id, 0x98FE_F100);
        assert_eq!(back.data, vec![0x0C, 0xFF, 0xFF, 0, 0, 0, 0, 0]);
        assert!(parse(&m[..8]).is_none());
    }
}
