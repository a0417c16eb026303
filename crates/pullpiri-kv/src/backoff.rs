//! Bounded exponential back-off with jitter, for every retry loop of the
//! bridge.

use std::time::Duration;

use rand::Rng;

/// Retry delays that double from `initial` up to `max`. Each delay is drawn
/// from the upper half of the current step ("equal jitter"): never shorter
/// than half of it, so retries still slow down, and never longer than `max`,
/// and two bridges that lost the service at once do not retry in lockstep.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    step: Duration,
}

impl Backoff {
    /// Delays from `initial` (at least 1 ms) up to `max` (at least `initial`).
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        let max = max.max(initial);
        Self {
            initial,
            max,
            step: initial,
        }
    }

    /// The delay before the next retry; the one after it will be longer,
    /// until `max`.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = step.saturating_mul(2).min(self.max);
        jittered(step, rand::rng().random::<f64>())
    }

    /// Back to `initial`, after a success.
    pub(crate) fn reset(&mut self) {
        self.step = self.initial;
    }
}

/// `step / 2 + unit * step / 2`: the upper half of `step`, chosen by `unit`
/// in `[0, 1]` (clamped; NaN counts as 0).
fn jittered(step: Duration, unit: f64) -> Duration {
    let unit = if unit.is_nan() {
        0.0
    } else {
        unit.clamp(0.0, 1.0)
    };
    let half = step / 2;
    half + half.mul_f64(unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_the_upper_half_of_the_step() {
        let step = Duration::from_millis(400);
        assert_eq!(jittered(step, 0.0), Duration::from_millis(200));
        assert_eq!(jittered(step, 0.5), Duration::from_millis(300));
        assert_eq!(jittered(step, 1.0), Duration::from_millis(400));
        assert_eq!(jittered(step, -3.0), Duration::from_millis(200));
        assert_eq!(jittered(step, f64::NAN), Duration::from_millis(200));
    }

    #[test]
    fn delays_double_up_to_the_cap_and_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let steps = [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000];
        for step in steps {
            let step = Duration::from_millis(step);
            let delay = backoff.next_delay();
            assert!(delay >= step / 2 && delay <= step, "{delay:?} for {step:?}");
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn nonsense_bounds_are_repaired() {
        let mut backoff = Backoff::new(Duration::ZERO, Duration::ZERO);
        for _ in 0..100 {
            assert!(backoff.next_delay() <= Duration::from_millis(1));
        }
    }
}
