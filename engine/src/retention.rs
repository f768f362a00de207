//! Which snapshots a retention policy keeps (`ferry forget`).
//!
//! Snapshots are grouped by name (an image's name, or a domain's). Within a group, newest
//! first, a snapshot is kept when any rule claims it:
//! - `keep_last N`: the N newest snapshots;
//! - `keep_daily N`: the newest snapshot of each of the N most recent UTC days that have one;
//! - `keep_weekly N`: the same per week (Monday to Sunday, UTC);
//! - `keep_monthly N`: the same per calendar month (UTC).
//!
//! Each rule counts only periods that have snapshots, so a week without backups does not use up
//! a daily slot. Every snapshot not claimed by a rule is removed. Deciding is a pure function of
//! the snapshots' names and times: the same input gives the same decision.

use std::collections::BTreeMap;

use crate::calendar::{day_of, month_of, week_of};

/// How many snapshots of each kind to keep per group. All zero means "keep nothing", which
/// callers must refuse to apply by accident (see [`Policy::is_empty`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    pub keep_last: usize,
    pub keep_daily: usize,
    pub keep_weekly: usize,
    pub keep_monthly: usize,
}

impl Policy {
    /// No rule keeps anything.
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }
}

/// One snapshot as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    /// The group: the snapshot's name.
    pub name: String,
    /// When the backup finished: seconds and nanoseconds since the Unix epoch (UTC).
    pub finished_at: (u64, u32),
}

/// Why a snapshot is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    Last,
    Daily,
    Weekly,
    Monthly,
}

/// The decision for one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub candidate: Candidate,
    /// The rules that keep it; empty means it is removed.
    pub reasons: Vec<Reason>,
}

impl Decision {
    pub fn keep(&self) -> bool {
        !self.reasons.is_empty()
    }
}

/// Maps a Unix time to its period (day, week or month) number.
type PeriodOf = fn(u64) -> i64;

/// Applies `policy` to each group of `candidates`. Decisions come back grouped by name (in name
/// order), newest first within a group.
pub fn apply(policy: &Policy, candidates: &[Candidate]) -> Vec<Decision> {
    let mut groups: BTreeMap<&str, Vec<&Candidate>> = BTreeMap::new();
    for candidate in candidates {
        groups.entry(&candidate.name).or_default().push(candidate);
    }
    let mut decisions = Vec::with_capacity(candidates.len());
    for (_, mut group) in groups {
        // Newest first; the id breaks ties so the order never depends on the input's.
        group.sort_by(|a, b| (b.finished_at, &b.id).cmp(&(a.finished_at, &a.id)));
        let mut reasons = vec![Vec::new(); group.len()];
        for r in reasons.iter_mut().take(policy.keep_last) {
            r.push(Reason::Last);
        }
        let periods: [(Reason, usize, PeriodOf); 3] = [
            (Reason::Daily, policy.keep_daily, day_of),
            (Reason::Weekly, policy.keep_weekly, week_of),
            (Reason::Monthly, policy.keep_monthly, month_of),
        ];
        for (reason, count, period_of) in periods {
            let mut last_period = None;
            let mut kept = 0;
            for (candidate, reasons) in group.iter().zip(reasons.iter_mut()) {
                if kept == count {
                    break;
                }
                let period = period_of(candidate.finished_at.0);
                // Newest first: the first snapshot seen in a period is that period's newest.
                if last_period != Some(period) {
                    last_period = Some(period);
                    reasons.push(reason);
                    kept += 1;
                }
            }
        }
        decisions.extend(
            group
                .into_iter()
                .zip(reasons)
                .map(|(candidate, reasons)| Decision {
                    candidate: candidate.clone(),
                    reasons,
                }),
        );
    }
    decisions
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3600;
    const DAY: u64 = 24 * HOUR;
    /// 2026-11-30T00:00:00Z, a Monday.
    const MONDAY: u64 = 20_787 * DAY;

    fn snap(name: &str, unix: u64) -> Candidate {
        Candidate {
            id: format!("{name}-{unix}"),
            name: name.to_owned(),
            finished_at: (unix, 0),
        }
    }

    /// A kept snapshot: its time relative to MONDAY in hours, and why it is kept.
    type Kept = (i64, Vec<Reason>);

    /// Kept snapshots, newest first.
    fn kept(policy: Policy, snaps: &[Candidate]) -> Vec<Kept> {
        apply(&policy, snaps)
            .into_iter()
            .filter(Decision::keep)
            .map(|d| {
                let hours = (d.candidate.finished_at.0 as i64 - MONDAY as i64) / HOUR as i64;
                (hours, d.reasons)
            })
            .collect()
    }

    /// Every 6 hours for 70 days before MONDAY (the newest at MONDAY - 6 h).
    fn calendar(name: &str) -> Vec<Candidate> {
        (1..=70 * 4)
            .map(|i| snap(name, MONDAY - i * 6 * HOUR))
            .collect()
    }

    fn policy(last: usize, daily: usize, weekly: usize, monthly: usize) -> Policy {
        Policy {
            keep_last: last,
            keep_daily: daily,
            keep_weekly: weekly,
            keep_monthly: monthly,
        }
    }

    #[test]
    fn table_of_policies_on_a_calendar() {
        use Reason::*;
        let snaps = calendar("vm1");
        // (policy, expected kept: hours before MONDAY and reasons, newest first)
        let cases: Vec<(Policy, Vec<Kept>)> = vec![
            (policy(0, 0, 0, 0), vec![]),
            (
                policy(3, 0, 0, 0),
                vec![(-6, vec![Last]), (-12, vec![Last]), (-18, vec![Last])],
            ),
            // The newest of each of the last 3 days: 18:00 of Sun, Sat, Fri.
            (
                policy(0, 3, 0, 0),
                vec![(-6, vec![Daily]), (-30, vec![Daily]), (-54, vec![Daily])],
            ),
            // Weeks end on Sunday: the newest of each of the last 2 weeks.
            (
                policy(0, 0, 2, 0),
                vec![(-6, vec![Weekly]), (-6 - 7 * 24, vec![Weekly])],
            ),
            // Months: November's newest (Nov 29 18:00), October's (Oct 31 18:00), September's.
            (
                policy(0, 0, 0, 3),
                vec![
                    (-6, vec![Monthly]),
                    (-6 - 29 * 24, vec![Monthly]),
                    (-6 - 60 * 24, vec![Monthly]),
                ],
            ),
            // Rules overlap: reasons accumulate, nothing is kept twice.
            (
                policy(2, 2, 1, 1),
                vec![
                    (-6, vec![Last, Daily, Weekly, Monthly]),
                    (-12, vec![Last]),
                    (-30, vec![Daily]),
                ],
            ),
        ];
        for (policy, expected) in cases {
            assert_eq!(kept(policy, &snaps), expected, "{policy:?}");
        }
    }

    #[test]
    fn more_slots_than_snapshots_keeps_all() {
        let snaps: Vec<_> = (0..3).map(|i| snap("a", MONDAY + i * DAY)).collect();
        let decisions = apply(&policy(10, 10, 10, 10), &snaps);
        assert!(decisions.iter().all(Decision::keep));
        // Only existing periods count: 3 days, 1 week, 1 month.
        let weekly = decisions
            .iter()
            .filter(|d| d.reasons.contains(&Reason::Weekly))
            .count();
        assert_eq!(weekly, 1);
    }

    #[test]
    fn groups_are_decided_separately() {
        let mut snaps = calendar("vm1");
        snaps.extend((1..=5).map(|i| snap("disk.img", MONDAY - i * HOUR)));
        let decisions = apply(&policy(2, 0, 0, 0), &snaps);
        let kept: Vec<&str> = decisions
            .iter()
            .filter(|d| d.keep())
            .map(|d| d.candidate.name.as_str())
            .collect();
        assert_eq!(kept, ["disk.img", "disk.img", "vm1", "vm1"]);
        assert_eq!(decisions.len(), snaps.len());
    }

    #[test]
    fn order_of_input_and_ties_do_not_matter() {
        let mut snaps = vec![snap("a", MONDAY), snap("a", MONDAY - DAY)];
        let mut twin = snap("a", MONDAY);
        twin.id = "a-0-twin".into();
        snaps.push(twin);
        let forward = apply(&policy(1, 1, 0, 0), &snaps);
        snaps.reverse();
        let backward = apply(&policy(1, 1, 0, 0), &snaps);
        assert_eq!(forward, backward);
        // The larger id wins a tie in time.
        assert_eq!(forward[0].candidate.id, "a-1795996800");
    }

    #[test]
    fn empty_policy_is_recognised() {
        assert!(Policy::default().is_empty());
        assert!(!policy(0, 0, 0, 1).is_empty());
    }
}
