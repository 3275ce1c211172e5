//! Maintenance windows: weekday/time ranges of wall-clock time, such as `Mon-Fri 01:00-05:00`,
//! in the system's local time zone or an IANA zone read from the system tz database.
//!
//! The check converts "now" to wall-clock time in the zone and compares, so a window means the
//! same hours in winter and in summer. On the night clocks jump forward, hours that do not exist
//! are simply not inside; on the night they fall back, the repeated hour is inside twice.
//!
//! The time-zone arithmetic is jiff's; the window grammar (SPEC 4) and the range test are ours,
//! for a need no library meets: cron crates (`cron`, `croner`) describe instants at which to
//! fire, not spans of hours that an instant is inside or not.

use std::fmt;

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::Timestamp;

/// The days as windows write them, Monday first.
pub const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// One range: on the days in `days` (bit 0 = Monday), from `start` until `end`, in minutes
/// after midnight. `end <= start` runs across midnight into the next day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    days: u8,
    start: u16,
    end: u16,
}

fn day_bit(d: Weekday) -> u8 {
    1 << d.to_monday_zero_offset()
}

/// The text of `Window::parse`, for the config's validation (`Display` is the inverse).
impl std::str::FromStr for Window {
    type Err = String;

    fn from_str(s: &str) -> Result<Window, String> {
        Window::parse(s)
    }
}

impl Window {
    /// `"Mon-Fri 01:00-05:00"`, `"Sat,Sun 00:00-24:00"`, `"Fri-Mon 22:00-02:00"`, or a time range
    /// alone for every day.
    pub fn parse(s: &str) -> Result<Window, String> {
        let bad = |why: &str| format!("{s:?}: {why}; expected e.g. \"Mon-Fri 01:00-05:00\"");
        let mut parts = s.split_whitespace();
        let (days, times) = match (parts.next(), parts.next(), parts.next()) {
            (Some(t), None, None) => ("Mon-Sun", t),
            (Some(d), Some(t), None) => (d, t),
            _ => return Err(bad("one day list and one time range")),
        };
        let mut mask = 0u8;
        for item in days.split(',') {
            let day = |name: &str| {
                DAYS.iter()
                    .position(|d| d.eq_ignore_ascii_case(name))
                    .ok_or_else(|| bad(&format!("unknown day {name:?} (Mon..Sun)")))
            };
            match item.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (day(a)?, day(b)?);
                    let mut i = a;
                    loop {
                        mask |= 1 << i;
                        if i == b {
                            break;
                        }
                        i = (i + 1) % 7;
                    }
                }
                None => mask |= 1 << day(item)?,
            }
        }
        let (a, b) = times
            .split_once('-')
            .ok_or_else(|| bad("the time range needs a '-'"))?;
        let minutes = |t: &str, allow_24: bool| -> Result<u16, String> {
            let (h, m) = t
                .split_once(':')
                .filter(|(h, m)| h.len() == 2 && m.len() == 2)
                .ok_or_else(|| bad(&format!("{t:?} is not HH:MM")))?;
            let (h, m): (u16, u16) = (
                h.parse().map_err(|_| bad(&format!("{t:?} is not HH:MM")))?,
                m.parse().map_err(|_| bad(&format!("{t:?} is not HH:MM")))?,
            );
            match (h, m) {
                (24, 0) if allow_24 => Ok(1440),
                (0..=23, 0..=59) => Ok(h * 60 + m),
                _ => Err(bad(&format!("{t:?} is not a time of day"))),
            }
        };
        let (start, end) = (minutes(a, false)?, minutes(b, true)?);
        if start == end {
            return Err(bad("the range is empty (start equals end)"));
        }
        Ok(Window {
            days: mask,
            start,
            end,
        })
    }

    /// Whether wall-clock time `at` (weekday, minutes after midnight) is inside.
    fn contains(&self, day: Weekday, minute: u16) -> bool {
        if self.start < self.end {
            self.days & day_bit(day) != 0 && (self.start..self.end).contains(&minute)
        } else {
            (self.days & day_bit(day) != 0 && minute >= self.start)
                || (self.days & day_bit(day.previous()) != 0 && minute < self.end)
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Runs of consecutive days as `Mon-Fri`, others listed: `Mon,Wed`.
        let mut items = Vec::new();
        let mut i = 0;
        while i < 7 {
            if self.days & (1 << i) == 0 {
                i += 1;
                continue;
            }
            let first = i;
            while i + 1 < 7 && self.days & (1 << (i + 1)) != 0 {
                i += 1;
            }
            items.push(if first == i {
                DAYS[i].to_owned()
            } else {
                format!("{}-{}", DAYS[first], DAYS[i])
            });
            i += 1;
        }
        let hm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
        write!(f, "{} {}-{}", items.join(","), hm(self.start), hm(self.end))
    }
}

/// The zone by IANA name from the system tz database, or the system's local zone.
pub fn zone(name: Option<&str>) -> Result<TimeZone, String> {
    match name {
        Some(n) => TimeZone::get(n).map_err(|e| {
            format!("{n:?} is not a time zone in the system tz database (/usr/share/zoneinfo): {e}")
        }),
        None => TimeZone::try_system()
            .map_err(|e| format!("cannot tell the local time zone (/etc/localtime): {e}")),
    }
}

/// Whether `now` is inside any of `windows`, in `tz`.
pub fn is_open(windows: &[Window], tz: &TimeZone, now: Timestamp) -> bool {
    let local = now.to_zoned_datetime(tz.clone());
    let minute = local.hour() as u16 * 60 + local.minute() as u16;
    windows.iter().any(|w| w.contains(local.weekday(), minute))
}

/// When the next window starts after `now` (within eight days), in `tz`.
pub fn next_open(windows: &[Window], tz: &TimeZone, now: Timestamp) -> Option<Timestamp> {
    let today: Date = now.to_zoned_datetime(tz.clone()).date();
    let mut best: Option<Timestamp> = None;
    for offset in 0..=8i64 {
        let Ok(date) = today.checked_add(jiff::Span::new().days(offset)) else {
            continue;
        };
        for w in windows {
            if w.days & day_bit(date.weekday()) == 0 || w.start >= 1440 {
                continue;
            }
            let Ok(time) = Time::new((w.start / 60) as i8, (w.start % 60) as i8, 0, 0) else {
                continue;
            };
            // A start inside a DST gap moves forward to the first instant that exists.
            let Ok(start) = date.to_datetime(time).to_zoned_datetime(tz.clone()) else {
                continue;
            };
            let ts = start.timestamp();
            if ts > now && best.is_none_or(|b| ts < b) {
                best = Some(ts);
            }
        }
    }
    best
}

/// The next instant after `now` at which a window starts or ends, in `tz`. Around a DST change
/// a wall-clock time that occurs twice gives both instants, and the zone's next transition is
/// a candidate too (a window starting inside a gap opens at its end): a wake-up too many is
/// harmless (the gate is read again), one too few would leave the loop asleep while the gate
/// changed.
pub fn next_edge(windows: &[Window], tz: &TimeZone, now: Timestamp) -> Option<Timestamp> {
    let today: Date = now.to_zoned_datetime(tz.clone()).date();
    let mut best: Option<Timestamp> = tz
        .following(now)
        .next()
        .map(|t| t.timestamp())
        .filter(|t| *t > now);
    let mut consider = |date: Date, minute: u16| {
        let (date, minute) = if minute >= 1440 {
            (date.tomorrow().ok(), minute - 1440)
        } else {
            (Some(date), minute)
        };
        let Some(date) = date else { return };
        let Ok(time) = Time::new((minute / 60) as i8, (minute % 60) as i8, 0, 0) else {
            return;
        };
        let amb = tz.to_ambiguous_timestamp(date.to_datetime(time));
        for ts in [amb.earlier(), amb.later()].into_iter().flatten() {
            if ts > now && best.is_none_or(|b| ts < b) {
                best = Some(ts);
            }
        }
    };
    for offset in -1..=8i64 {
        let Ok(date) = today.checked_add(jiff::Span::new().days(offset)) else {
            continue;
        };
        for w in windows {
            if w.days & day_bit(date.weekday()) == 0 {
                continue;
            }
            consider(date, w.start);
            // An end at or before the start is on the next day.
            consider(
                date,
                if w.end <= w.start {
                    w.end + 1440
                } else {
                    w.end
                },
            );
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(tz: &str, local: &str) -> Timestamp {
        let dt: jiff::civil::DateTime = local.parse().unwrap();
        dt.to_zoned_datetime(TimeZone::get(tz).unwrap())
            .unwrap()
            .timestamp()
    }

    fn open(windows: &[&str], tz: &str, local: &str) -> bool {
        let w: Vec<Window> = windows.iter().map(|w| Window::parse(w).unwrap()).collect();
        is_open(&w, &TimeZone::get(tz).unwrap(), at(tz, local))
    }

    #[test]
    fn parse_and_print() {
        for (text, printed) in [
            ("Mon-Fri 01:00-05:00", "Mon-Fri 01:00-05:00"),
            ("sat,SUN 00:00-24:00", "Sat-Sun 00:00-24:00"),
            ("Fri-Mon 22:00-02:00", "Mon,Fri-Sun 22:00-02:00"),
            ("02:30-03:00", "Mon-Sun 02:30-03:00"),
            ("Mon,Wed 23:00-01:00", "Mon,Wed 23:00-01:00"),
        ] {
            let w = Window::parse(text).unwrap();
            assert_eq!(w.to_string(), printed, "{text}");
            assert_eq!(Window::parse(printed).unwrap(), w, "{printed} round trip");
        }
        for bad in [
            "",
            "Mon-Fri",
            "Mon-Fri 1:00-5:00",
            "Mon-Fri 01:00",
            "Funday 01:00-02:00",
            "Mon 25:00-26:00",
            "Mon 01:60-02:00",
            "Mon 24:00-01:00",
            "Mon 03:00-03:00",
            "Mon 01:00-02:00 extra",
        ] {
            assert!(Window::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn inside_and_outside() {
        let tz = "Europe/Berlin";
        // 2026-11-23 is a Monday.
        for (windows, local, want) in [
            (&["Mon-Fri 01:00-05:00"][..], "2026-11-23T01:00", true),
            (&["Mon-Fri 01:00-05:00"], "2026-11-23T04:59", true),
            (&["Mon-Fri 01:00-05:00"], "2026-11-23T05:00", false),
            (&["Mon-Fri 01:00-05:00"], "2026-11-23T00:59", false),
            (&["Mon-Fri 01:00-05:00"], "2026-11-28T02:00", false), // Saturday
            (&["Sat-Sun 00:00-24:00"], "2026-11-29T23:59", true),
            (&["Sat-Sun 00:00-24:00"], "2026-11-30T00:00", false),
            // Across midnight: Friday 22:00 to Saturday 02:00, not Friday 01:00.
            (&["Fri 22:00-02:00"], "2026-11-27T22:00", true),
            (&["Fri 22:00-02:00"], "2026-11-28T01:59", true),
            (&["Fri 22:00-02:00"], "2026-11-28T02:00", false),
            (&["Fri 22:00-02:00"], "2026-11-27T01:00", false),
            (&["Fri 22:00-02:00"], "2026-11-28T22:30", false),
            // Sunday night into Monday wraps the week.
            (&["Sun 23:00-01:00"], "2026-11-23T00:30", true),
            (
                &["Mon-Fri 01:00-05:00", "Sat-Sun 00:00-24:00"],
                "2026-11-28T12:00",
                true,
            ),
        ] {
            assert_eq!(open(windows, tz, local), want, "{windows:?} at {local}");
        }
    }

    #[test]
    fn wall_clock_hours_hold_across_dst_changes() {
        let tz = "America/New_York";
        let w = ["01:00-03:00"];
        // 2026-03-08: clocks jump from 02:00 to 03:00. 01:30 is inside, 03:30 is not.
        assert!(open(&w, tz, "2026-03-08T01:30"));
        assert!(!open(&w, tz, "2026-03-08T03:30"));
        // The window holds one real hour that night: 06:00Z and 06:59Z are inside (01:00-01:59
        // EST); 07:00Z is already 03:00 EDT.
        let win: Vec<Window> = w.iter().map(|w| Window::parse(w).unwrap()).collect();
        let ny = TimeZone::get(tz).unwrap();
        let utc = |s: &str| s.parse::<Timestamp>().unwrap();
        assert!(is_open(&win, &ny, utc("2026-03-08T06:59:00Z")));
        assert!(!is_open(&win, &ny, utc("2026-03-08T07:00:00Z")));
        // 2026-11-01: 01:00-02:00 happens twice; both are inside (05:30Z EDT, 06:30Z EST).
        assert!(is_open(&win, &ny, utc("2026-11-01T05:30:00Z")));
        assert!(is_open(&win, &ny, utc("2026-11-01T06:30:00Z")));
        assert!(is_open(&win, &ny, utc("2026-11-01T07:30:00Z"))); // 02:30 EST
        assert!(!is_open(&win, &ny, utc("2026-11-01T08:00:00Z"))); // 03:00 EST
                                                                   // Summer and winter: 01:00 local is a different UTC hour, same window.
        assert!(open(&w, tz, "2026-07-01T01:00"));
        assert!(open(&w, tz, "2026-01-01T01:00"));
    }

    /// Minute by minute across both DST nights: every change of the reading happens at the
    /// edge `next_edge` announced the minute before, so a loop asleep until then misses none.
    #[test]
    fn the_next_edge_is_never_late_across_dst() {
        let win: Vec<Window> = [
            "01:00-01:30",
            "Sun 02:30-04:00",
            "Sat 12:00-24:00",
            "Sun 22:00-02:00",
        ]
        .iter()
        .map(|w| Window::parse(w).unwrap())
        .collect();
        for (tz, day) in [
            ("America/New_York", "2026-11-01T00:00:00Z"),
            ("America/New_York", "2026-03-08T00:00:00Z"),
            ("Europe/Berlin", "2026-03-28T20:00:00Z"),
            ("Europe/Berlin", "2026-10-24T20:00:00Z"),
        ] {
            let tz = TimeZone::get(tz).unwrap();
            let start: Timestamp = day.parse().unwrap();
            let mut changes = 0;
            for m in 0..(36 * 60) {
                let t = start + jiff::SignedDuration::from_mins(m);
                let next = t + jiff::SignedDuration::from_mins(1);
                let edge = next_edge(&win, &tz, t).unwrap();
                assert!(edge > t);
                if is_open(&win, &tz, t) != is_open(&win, &tz, next) {
                    changes += 1;
                    assert!(edge <= next, "{tz:?} {t}: changes by {next}, edge {edge}");
                }
            }
            assert!(changes >= 2, "{day}: the test saw the windows change");
        }
        // Fall back in New York: 01:00-01:30 happens twice, and both openings are edges.
        let ny = TimeZone::get("America/New_York").unwrap();
        let w = [Window::parse("01:00-01:30").unwrap()];
        let utc = |s: &str| s.parse::<Timestamp>().unwrap();
        let mut t = utc("2026-11-01T04:00:00Z");
        let mut edges = Vec::new();
        for _ in 0..4 {
            t = next_edge(&w, &ny, t).unwrap();
            edges.push(t.to_string());
        }
        assert_eq!(
            edges,
            [
                "2026-11-01T05:00:00Z",
                "2026-11-01T05:30:00Z",
                "2026-11-01T06:00:00Z",
                "2026-11-01T06:30:00Z"
            ]
        );
    }

    #[test]
    fn next_opening() {
        let tz = TimeZone::get("Europe/Berlin").unwrap();
        let w = [Window::parse("Mon-Fri 01:00-05:00").unwrap()];
        // Saturday noon: Monday 01:00.
        let next = next_open(&w, &tz, at("Europe/Berlin", "2026-11-28T12:00")).unwrap();
        assert_eq!(next, at("Europe/Berlin", "2026-11-30T01:00"));
        // A start in the spring-forward gap (02:30 on 2026-03-29 in Berlin does not exist) is
        // shifted by the gap, to 03:30 CEST: the estimate errs late, never early.
        let w = [Window::parse("02:30-04:00").unwrap()];
        let next = next_open(&w, &tz, at("Europe/Berlin", "2026-03-29T00:00")).unwrap();
        assert_eq!(next, "2026-03-29T01:30:00Z".parse::<Timestamp>().unwrap());
    }

    #[test]
    fn unknown_zones_are_refused() {
        assert!(zone(Some("Mars/Olympus_Mons"))
            .unwrap_err()
            .contains("not a time zone"));
        assert!(zone(Some("Asia/Tokyo")).is_ok());
    }
}
