//! A DaemonSet's strategy annotation and its fleet budget (SPEC section 6b), as OpenYurt reads
//! them: `apps.openyurt.io/update-strategy` compared case-insensitively, and
//! `apps.openyurt.io/max-unavailable` as an integer or a percentage rounded up.

use std::fmt;

/// The annotation that names a DaemonSet's upgrade strategy.
pub const STRATEGY_ANNOTATION: &str = "apps.openyurt.io/update-strategy";
/// The annotation that sets the fleet budget.
pub const MAX_UNAVAILABLE_ANNOTATION: &str = "apps.openyurt.io/max-unavailable";
/// The budget of an `AdvancedRollingUpdate` DaemonSet without the annotation (or with 0).
pub const DEFAULT_MAX_UNAVAILABLE: &str = "10%";

/// What a DaemonSet asks of its nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// The node decides when: the API, the queue or automatic mode, under the gates.
    Ota,
    /// Upgrade as soon as the pod is outdated, under the gates, within the fleet budget.
    AdvancedRollingUpdate,
}

impl Strategy {
    /// The annotation's value, as OpenYurt compares it: `OTA` (`ota` in v1.1–v1.2),
    /// `AdvancedRollingUpdate` (`auto`/`Auto` in v1.1–v1.4), case-insensitively. `None` for a
    /// value no OpenYurt version knows: such a DaemonSet is left alone.
    pub fn parse(value: &str) -> Option<Strategy> {
        let v = value.trim();
        if v.eq_ignore_ascii_case("ota") {
            Some(Strategy::Ota)
        } else if v.eq_ignore_ascii_case("advancedrollingupdate") || v.eq_ignore_ascii_case("auto")
        {
            Some(Strategy::AdvancedRollingUpdate)
        } else {
            None
        }
    }

    /// The word shown in status and logs.
    pub fn word(self) -> &'static str {
        match self {
            Strategy::Ota => "OTA",
            Strategy::AdvancedRollingUpdate => "AdvancedRollingUpdate",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

/// How many nodes may upgrade one DaemonSet at once, fleet-wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub slots: u32,
    /// The annotation's value it came from, or the default, for status.
    pub from_default: bool,
}

/// The fleet budget of a DaemonSet, or `None` when it has none (an `OTA` DaemonSet without the
/// annotation). `Err` names a value that is neither an integer nor a percentage; the caller
/// logs it once and falls back to the default, as OpenYurt's controller does for its own
/// strategy (a typo must not lift the budget).
pub fn budget(
    strategy: Strategy,
    annotation: Option<&str>,
    desired_number_scheduled: u32,
) -> Result<Option<Budget>, String> {
    let given = annotation.map(str::trim).filter(|a| !a.is_empty());
    let value = match (strategy, given) {
        (Strategy::Ota, None) => return Ok(None),
        (_, Some(v)) => v,
        (Strategy::AdvancedRollingUpdate, None) => DEFAULT_MAX_UNAVAILABLE,
    };
    let resolved = resolve(value, desired_number_scheduled)
        .map_err(|e| format!("{MAX_UNAVAILABLE_ANNOTATION}: {e}"))?;
    // 0 and 0% mean the default, as in OpenYurt; then never below 1.
    let (slots, from_default) = match resolved {
        0 => (
            resolve(DEFAULT_MAX_UNAVAILABLE, desired_number_scheduled)?,
            true,
        ),
        n => (n, given.is_none()),
    };
    // Never above the nodes that run it (Kubernetes bounds a larger maxUnavailable the same
    // way): slots that no node can use would only cost memory and time.
    Ok(Some(Budget {
        slots: slots.min(desired_number_scheduled).max(1),
        from_default,
    }))
}

/// An integer, or a percentage of `total` rounded up.
fn resolve(value: &str, total: u32) -> Result<u32, String> {
    if let Some(pct) = value.strip_suffix('%') {
        let p: u64 = pct
            .trim()
            .parse()
            .map_err(|_| format!("{value:?} is not a percentage such as \"10%\""))?;
        if p > 100 {
            return Err(format!("{value:?} is over 100%"));
        }
        Ok(((u64::from(total) * p).div_ceil(100)) as u32)
    } else {
        value
            .parse::<u32>()
            .map_err(|_| format!("{value:?} is neither a whole number nor a percentage"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_are_read_as_openyurt_reads_them() {
        for (value, want) in [
            ("OTA", Some(Strategy::Ota)),
            ("ota", Some(Strategy::Ota)),
            ("Ota", Some(Strategy::Ota)),
            (
                "AdvancedRollingUpdate",
                Some(Strategy::AdvancedRollingUpdate),
            ),
            (
                "advancedrollingupdate",
                Some(Strategy::AdvancedRollingUpdate),
            ),
            ("auto", Some(Strategy::AdvancedRollingUpdate)),
            ("Auto", Some(Strategy::AdvancedRollingUpdate)),
            (" OTA ", Some(Strategy::Ota)),
            ("RollingUpdate", None),
            ("", None),
            ("otaa", None),
        ] {
            assert_eq!(Strategy::parse(value), want, "{value:?}");
        }
    }

    #[test]
    fn budgets_follow_the_annotation_the_default_and_the_floor() {
        use Strategy::*;
        let slots = |s, a, n| budget(s, a, n).unwrap().map(|b| b.slots);
        // OTA has a budget only when annotated.
        assert_eq!(slots(Ota, None, 50), None);
        assert_eq!(slots(Ota, Some("2"), 50), Some(2));
        assert_eq!(slots(Ota, Some("  "), 50), None);
        // AdvancedRollingUpdate defaults to 10%, rounded up, at least 1.
        assert_eq!(slots(AdvancedRollingUpdate, None, 50), Some(5));
        assert_eq!(slots(AdvancedRollingUpdate, None, 51), Some(6));
        assert_eq!(slots(AdvancedRollingUpdate, None, 5), Some(1));
        assert_eq!(slots(AdvancedRollingUpdate, None, 0), Some(1));
        // 0 and 0% mean the default.
        assert_eq!(slots(AdvancedRollingUpdate, Some("0"), 50), Some(5));
        assert_eq!(slots(AdvancedRollingUpdate, Some("0%"), 50), Some(5));
        assert_eq!(slots(Ota, Some("0"), 20), Some(2));
        // Percentages round up; integers are taken as they are.
        assert_eq!(slots(AdvancedRollingUpdate, Some("25%"), 5), Some(2));
        assert_eq!(slots(AdvancedRollingUpdate, Some("100%"), 7), Some(7));
        assert_eq!(slots(AdvancedRollingUpdate, Some("2"), 5), Some(2));
        assert_eq!(slots(AdvancedRollingUpdate, Some("9"), 5), Some(5));
        assert!(budget(AdvancedRollingUpdate, Some("2"), 5)
            .unwrap()
            .is_some_and(|b| !b.from_default));
        assert!(budget(AdvancedRollingUpdate, None, 5)
            .unwrap()
            .is_some_and(|b| b.from_default));
    }

    /// Regression (issue 23, item 3): `max-unavailable: "4000000000"` made every node
    /// allocate and loop per slot (an abort, or a core spinning); it is bounded by
    /// `desiredNumberScheduled`, as Kubernetes bounds a larger `maxUnavailable`.
    #[test]
    fn one_annotation_crashes_or_spins_every_node() {
        use Strategy::*;
        let slots = |a, n| {
            budget(AdvancedRollingUpdate, Some(a), n)
                .unwrap()
                .map(|b| b.slots)
        };
        assert_eq!(slots("4000000000", 5), Some(5));
        assert_eq!(slots("5000000", 1000), Some(1000));
        assert_eq!(slots("4294967295", 0), Some(1), "no status yet: at least 1");
        assert_eq!(slots("100%", 10_000), Some(10_000));
    }

    #[test]
    fn a_malformed_budget_is_an_error_naming_the_annotation() {
        for bad in ["two", "-1", "10 %%", "150%", "1.5", "%"] {
            let e = budget(Strategy::AdvancedRollingUpdate, Some(bad), 10).unwrap_err();
            assert!(e.contains(MAX_UNAVAILABLE_ANNOTATION), "{bad}: {e}");
        }
    }
}
