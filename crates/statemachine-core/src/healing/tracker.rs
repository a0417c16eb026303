//! The tracker's analysis (RECOVERY.md §4), pure: a bounded history of one
//! resource's transitions, flapping over a sliding window, damping, and the
//! stability figures shown in `GetResourceState` and `/metrics`.

use std::collections::VecDeque;
use std::time::Duration;

use crate::state::{AnyState, ContainerState, ModelState, PackageState};

use super::ns;

/// The tracker's thresholds, with RECOVERY.md §4's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackerRules {
    /// Transitions within `flap_window` that make a resource flap (default 5).
    pub flap_threshold: u32,
    /// The sliding window, and how long a flapping resource must be stable
    /// before its incident acts again (default 60 s).
    pub flap_window: Duration,
    /// Transitions kept per resource (default 64): bounds memory and is
    /// what the figures are computed over.
    pub capacity: usize,
}

impl Default for TrackerRules {
    fn default() -> Self {
        Self {
            flap_threshold: 5,
            flap_window: Duration::from_secs(60),
            capacity: 64,
        }
    }
}

/// One committed transition of the resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// When it was committed (ns).
    pub at_ns: i64,
    /// The state it left.
    pub from: AnyState,
    /// The state it entered.
    pub to: AnyState,
}

/// How long the resource stayed in `from` before the latest `from → to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeDuration {
    /// The state left.
    pub from: AnyState,
    /// The state entered.
    pub to: AnyState,
    /// Time spent in `from` before that transition.
    pub duration: Duration,
}

/// The figures of one resource at a point in time.
#[derive(Debug, Clone, PartialEq)]
pub struct Stability {
    /// The current state, if any transition is known.
    pub state: Option<AnyState>,
    /// Time since the latest transition.
    pub time_in_state: Option<Duration>,
    /// Transitions within the window ending now.
    pub transitions_in_window: usize,
    /// Whether that is at least the flapping threshold.
    pub flapping: bool,
    /// Mean time between entries into Dead/Error (needs two entries).
    pub mtbf: Option<Duration>,
    /// The latest duration of each edge seen, newest first.
    pub last_durations: Vec<EdgeDuration>,
}

/// A bounded, time-ordered ring of one resource's transitions (seed 003's
/// `StateTracker`), rebuilt from the history at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    capacity: usize,
    ring: VecDeque<Transition>,
}

/// Whether entering `state` is a failure (MTBF counts these entries).
pub fn is_failure(state: AnyState) -> bool {
    matches!(
        state,
        AnyState::Package(PackageState::Error)
            | AnyState::Model(ModelState::Dead)
            | AnyState::Container(ContainerState::Dead)
    )
}

/// Whether `state` is healthy for recovery (RECOVERY.md §2.3): a package
/// Running, Paused or Exited (a requested stop), a model Running. Other
/// kinds are never recovered, so they count as healthy.
pub fn is_healthy(state: AnyState) -> bool {
    match state {
        AnyState::Package(p) => matches!(
            p,
            PackageState::Running | PackageState::Paused | PackageState::Exited
        ),
        AnyState::Model(m) => m == ModelState::Running,
        AnyState::Container(_) | AnyState::Scenario(_) => true,
    }
}

fn since(now_ns: i64, then_ns: i64) -> Duration {
    Duration::from_nanos(u64::try_from(now_ns.saturating_sub(then_ns)).unwrap_or(0))
}

impl History {
    /// An empty history keeping at most `capacity` transitions (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            ring: VecDeque::new(),
        }
    }

    /// Records a transition, dropping the oldest when full. A transition
    /// dated before the latest is kept at the latest's time, so the ring
    /// stays ordered (a clock step back must not break the window).
    pub fn record(&mut self, mut transition: Transition) {
        if let Some(last) = self.ring.back() {
            transition.at_ns = transition.at_ns.max(last.at_ns);
        }
        if self.ring.len() == self.capacity {
            self.ring.pop_front();
        }
        self.ring.push_back(transition);
    }

    /// The kept transitions, oldest first.
    pub fn transitions(&self) -> impl Iterator<Item = &Transition> {
        self.ring.iter()
    }

    /// Transitions in the window `(now - window, now]`.
    pub fn in_window(&self, window: Duration, now_ns: i64) -> usize {
        let start = now_ns.saturating_sub(ns(window));
        self.ring
            .iter()
            .rev()
            .take_while(|t| t.at_ns > start)
            .filter(|t| t.at_ns <= now_ns)
            .count()
    }

    /// Flapping: at least `flap_threshold` transitions within `flap_window`.
    pub fn is_flapping(&self, rules: &TrackerRules, now_ns: i64) -> bool {
        self.in_window(rules.flap_window, now_ns) >= rules.flap_threshold as usize
    }

    /// Damping: while flapping, the time the resource will have been stable
    /// for `flap_window` (its latest transition plus the window); an
    /// incident's next action waits for it. `None` when not flapping.
    pub fn quiet_until(&self, rules: &TrackerRules, now_ns: i64) -> Option<i64> {
        if !self.is_flapping(rules, now_ns) {
            return None;
        }
        let last = self.ring.back()?;
        Some(last.at_ns.saturating_add(ns(rules.flap_window)))
    }

    /// Mean time between entries into Dead/Error over the kept transitions.
    pub fn mtbf(&self) -> Option<Duration> {
        let mut entries = self
            .ring
            .iter()
            .filter(|t| is_failure(t.to))
            .map(|t| t.at_ns);
        let first = entries.next()?;
        let (count, last) = entries.fold((0u32, first), |(n, _), at| (n + 1, at));
        (count > 0).then(|| since(last, first) / count)
    }

    /// The latest duration of each edge, newest first: for each transition
    /// with a predecessor, the time between the two.
    pub fn last_durations(&self) -> Vec<EdgeDuration> {
        let mut seen: Vec<EdgeDuration> = Vec::new();
        let pairs = self.ring.iter().zip(self.ring.iter().skip(1)).rev();
        for (before, t) in pairs {
            if !seen.iter().any(|e| e.from == t.from && e.to == t.to) {
                seen.push(EdgeDuration {
                    from: t.from,
                    to: t.to,
                    duration: since(t.at_ns, before.at_ns),
                });
            }
        }
        seen
    }

    /// Every figure at `now_ns`.
    pub fn stability(&self, rules: &TrackerRules, now_ns: i64) -> Stability {
        let last = self.ring.back();
        let transitions_in_window = self.in_window(rules.flap_window, now_ns);
        Stability {
            state: last.map(|t| t.to),
            time_in_state: last.map(|t| since(now_ns, t.at_ns)),
            transitions_in_window,
            flapping: transitions_in_window >= rules.flap_threshold as usize,
            mtbf: self.mtbf(),
            last_durations: self.last_durations(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: i64 = 1_000_000_000;
    const RUN: AnyState = AnyState::Package(PackageState::Running);
    const ERR: AnyState = AnyState::Package(PackageState::Error);
    const DEG: AnyState = AnyState::Package(PackageState::Degraded);

    /// A history of alternating Running → Error → Running at these seconds.
    fn bouncing(seconds: &[i64]) -> History {
        let mut h = History::new(64);
        for (i, s) in seconds.iter().enumerate() {
            let (from, to) = if i % 2 == 0 { (RUN, ERR) } else { (ERR, RUN) };
            h.record(Transition {
                at_ns: s * S,
                from,
                to,
            });
        }
        h
    }

    /// (case, transition times s, now s, flapping, quiet until s)
    type FlapCase = (&'static str, &'static [i64], i64, bool, Option<i64>);

    #[test]
    fn flapping_needs_threshold_transitions_within_the_window() {
        let rules = TrackerRules::default();
        // (case, transition times s, now s, flapping, quiet until s)
        let cases: [FlapCase; 6] = [
            ("none", &[], 100, false, None),
            ("four", &[10, 20, 30, 40], 50, false, None),
            ("five", &[10, 20, 30, 40, 50], 50, true, Some(110)),
            (
                "five, first left the window",
                &[10, 20, 30, 40, 50],
                70,
                false,
                None,
            ),
            (
                "five, edge of the window",
                &[10, 20, 30, 40, 50],
                69,
                true,
                Some(110),
            ),
            ("six spread", &[0, 30, 61, 62, 63, 64], 64, true, Some(124)),
        ];
        for (case, times, now, flapping, quiet) in cases {
            let h = bouncing(times);
            assert_eq!(h.is_flapping(&rules, now * S), flapping, "{case}");
            assert_eq!(
                h.quiet_until(&rules, now * S),
                quiet.map(|q| q * S),
                "{case}"
            );
        }
    }

    #[test]
    fn stability_figures() {
        let rules = TrackerRules::default();
        let mut h = bouncing(&[0, 10, 40, 45]);
        h.record(Transition {
            at_ns: 100 * S,
            from: RUN,
            to: DEG,
        });
        let st = h.stability(&rules, 130 * S);
        assert_eq!(st.state, Some(DEG));
        assert_eq!(st.time_in_state, Some(Duration::from_secs(30)));
        assert_eq!(st.transitions_in_window, 1);
        assert!(!st.flapping);
        // Entries into Error at 0 and 40.
        assert_eq!(st.mtbf, Some(Duration::from_secs(40)));
        let edges: Vec<_> = st
            .last_durations
            .iter()
            .map(|e| (e.from, e.to, e.duration.as_secs()))
            .collect();
        assert_eq!(edges, [(RUN, DEG, 55), (ERR, RUN, 5), (RUN, ERR, 30)]);
        let empty = History::new(4).stability(&rules, 0);
        assert_eq!(
            (empty.state, empty.time_in_state, empty.mtbf),
            (None, None, None)
        );
        assert!(bouncing(&[0]).mtbf().is_none());
    }

    #[test]
    fn the_ring_is_bounded_and_ordered() {
        let mut h = History::new(3);
        for at in [5, 6, 7, 8, 2] {
            h.record(Transition {
                at_ns: at,
                from: RUN,
                to: ERR,
            });
        }
        let times: Vec<_> = h.transitions().map(|t| t.at_ns).collect();
        assert_eq!(times, [7, 8, 8]);
        assert!(is_failure(AnyState::Model(ModelState::Dead)));
        assert!(!is_failure(DEG));
    }

    proptest! {
        #[test]
        fn window_counts_match_a_plain_filter(
            gaps in proptest::collection::vec(0i64..30, 0..100),
            now_after in 0i64..100,
        ) {
            let rules = TrackerRules { capacity: 200, ..TrackerRules::default() };
            let mut h = History::new(rules.capacity);
            let mut at = 0;
            for gap in &gaps {
                at += gap * S;
                h.record(Transition { at_ns: at, from: RUN, to: ERR });
            }
            let now = at + now_after * S;
            let start = now - 60 * S;
            let plain = h.transitions().filter(|t| t.at_ns > start && t.at_ns <= now).count();
            prop_assert_eq!(h.in_window(rules.flap_window, now), plain);
            prop_assert_eq!(h.is_flapping(&rules, now), plain >= 5);
            if let Some(q) = h.quiet_until(&rules, now) {
                prop_assert!(q > now);
            }
        }
    }
}
