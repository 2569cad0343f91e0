//! The per-endpoint daily roll-up behind `GET /admin/endpoints/{id}/stats`: counts and a
//! latency histogram, updated in the same atomic batch as each attempt record, so the overview
//! never scans attempts.

use serde::{Deserialize, Serialize};

/// Width of one latency bucket: each bucket's upper bound is 1.2× the previous one, so the
/// median read from the histogram is within ±10% of the true one.
const GROWTH: f64 = 1.2;
/// Buckets: 1.2^95 ms is about 11 days, more than any timeout.
const BUCKETS: usize = 96;

/// One endpoint's attempts on one UTC day.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DailyRollup {
    /// Attempts made.
    pub attempts: u64,
    /// Attempts counted a success.
    pub successes: u64,
    /// Attempt durations by bucket (see [`GROWTH`]); grown on demand.
    latency: Vec<u32>,
}

/// The histogram bucket of an attempt's duration.
pub(crate) fn bucket(duration_ms: u64) -> usize {
    if duration_ms == 0 {
        return 0;
    }
    (((duration_ms as f64).ln() / GROWTH.ln()).floor() as usize + 1).min(BUCKETS - 1)
}

impl DailyRollup {
    /// Counts one attempt.
    pub fn add(&mut self, duration_ms: u64, success: bool) {
        self.attempts += 1;
        self.successes += u64::from(success);
        let i = bucket(duration_ms);
        if self.latency.len() <= i {
            self.latency.resize(i + 1, 0);
        }
        self.latency[i] = self.latency[i].saturating_add(1);
    }

    /// A roll-up from stored parts: counts and (bucket, attempts) pairs of the histogram.
    pub(crate) fn from_parts(
        attempts: u64,
        successes: u64,
        buckets: impl IntoIterator<Item = (usize, u64)>,
    ) -> DailyRollup {
        let mut latency = Vec::new();
        for (i, n) in buckets {
            let i = i.min(BUCKETS - 1);
            if latency.len() <= i {
                latency.resize(i + 1, 0);
            }
            latency[i] = u32::try_from(n).unwrap_or(u32::MAX);
        }
        DailyRollup {
            attempts,
            successes,
            latency,
        }
    }

    /// Attempts that were not a success.
    pub fn failures(&self) -> u64 {
        self.attempts - self.successes
    }

    /// The median duration: the geometric middle of the bucket holding the median attempt.
    pub fn median_ms(&self) -> Option<u64> {
        let total: u64 = self.latency.iter().map(|&n| u64::from(n)).sum();
        if total == 0 {
            return None;
        }
        let mut seen = 0;
        for (i, &n) in self.latency.iter().enumerate() {
            seen += u64::from(n);
            if seen * 2 >= total {
                return Some(if i == 0 {
                    0
                } else {
                    GROWTH.powf(i as f64 - 0.5).round() as u64
                });
            }
        }
        None
    }
}

/// Days since the Unix epoch of a time in ms (UTC).
pub fn day_of(ms: u64) -> u32 {
    (ms / 86_400_000) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_exact_and_the_median_is_within_ten_percent() {
        let mut day = DailyRollup::default();
        for (ms, ok) in [
            (10, true),
            (12, true),
            (100, false),
            (11, true),
            (5_000, false),
        ] {
            day.add(ms, ok);
        }
        assert_eq!((day.attempts, day.successes, day.failures()), (5, 3, 2));
        let median = day.median_ms().unwrap() as f64;
        assert!((median - 12.0).abs() <= 1.2, "median {median}");
        assert_eq!(DailyRollup::default().median_ms(), None);
        let mut fast = DailyRollup::default();
        fast.add(0, true);
        assert_eq!(fast.median_ms(), Some(0));
    }

    #[test]
    fn median_error_is_bounded_across_scales() {
        for true_ms in [1_u64, 7, 42, 333, 2_500, 29_999] {
            let mut day = DailyRollup::default();
            day.add(true_ms, true);
            let got = day.median_ms().unwrap() as f64;
            let error = (got - true_ms as f64).abs() / true_ms as f64;
            assert!(
                error <= 0.1 || (got - true_ms as f64).abs() <= 1.0,
                "{true_ms}: {got}"
            );
        }
    }
}
