//! Retry schedules: when each attempt of a delivery cycle happens.
//!
//! Every kind reduces to one list of *nominal offsets* from the first attempt
//! ([`Schedule::offsets`]): that list is what `herald policies show` prints and what the engine
//! follows. Attempt `k` is due at `anchor + offset[k]`, where the anchor is the time of the
//! cycle's first attempt. Anchoring (instead of "delay after the previous attempt") keeps a
//! window such as Gengo's "every 15 minutes for 12 hours" exact even when attempts are slow; a
//! due time already in the past simply means "now". A receiver's `Retry-After` may push an
//! attempt later, and then the anchor moves with it so the gaps after it are kept.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Upper bound on how far one `Retry-After` may push an attempt unless the policy says otherwise.
const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The retry schedule of a policy: a [`Backoff`] plus how `Retry-After` is treated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawSchedule", into = "RawSchedule")]
pub struct Schedule {
    /// The shape of the gaps between attempts.
    pub backoff: Backoff,
    /// A `Retry-After` on 429/503 may lengthen (never shorten) the next gap.
    pub honor_retry_after: bool,
    /// The longest `Retry-After` honoured; longer values are cut to this.
    pub max_retry_after: Duration,
}

/// The shape of a retry schedule.
#[derive(Debug, Clone, PartialEq)]
pub enum Backoff {
    /// The same gap every time, bounded by a number of attempts and/or a time window.
    Fixed {
        /// Gap between attempts.
        interval: Duration,
        /// Total attempts, the first included.
        max_attempts: Option<u32>,
        /// No attempt later than this after the first.
        max_duration: Option<Duration>,
    },
    /// `initial * factor^n`, capped at `max_interval`, for `max_retries` retries.
    Exponential {
        /// The first gap.
        initial: Duration,
        /// Growth per retry.
        factor: f64,
        /// Cap on one gap.
        max_interval: Duration,
        /// Retries after the first attempt.
        max_retries: u32,
        /// Each gap varies by up to ± this fraction.
        jitter: f64,
    },
    /// A listed gap before each retry.
    Explicit {
        /// The gaps, in order.
        delays: Vec<Duration>,
        /// Each gap varies by up to ± this fraction.
        jitter: f64,
    },
}

/// Attempts a fixed schedule may produce at most, so a typo like `interval = "1s"` with
/// `max_duration = "30d"` is refused instead of producing millions of attempts.
const MAX_ATTEMPTS: usize = 10_000;

impl Schedule {
    /// Every attempt's nominal offset from the first attempt; the first is always zero.
    pub fn offsets(&self) -> Vec<Duration> {
        let mut offsets = vec![Duration::ZERO];
        let mut at = Duration::ZERO;
        for k in 1..self.attempts() {
            at += self.gap(k);
            offsets.push(at);
        }
        offsets
    }

    /// Total attempts in one cycle, the first included.
    pub fn attempts(&self) -> u32 {
        match &self.backoff {
            Backoff::Fixed {
                interval,
                max_attempts,
                max_duration,
            } => {
                let by_window = max_duration
                    .map(|window| (window.as_millis() / interval.as_millis().max(1)) as u64 + 1)
                    .unwrap_or(u64::MAX);
                let by_count = max_attempts.map(u64::from).unwrap_or(u64::MAX);
                by_window.min(by_count).min(MAX_ATTEMPTS as u64) as u32
            }
            Backoff::Exponential { max_retries, .. } => max_retries + 1,
            Backoff::Explicit { delays, .. } => delays.len() as u32 + 1,
        }
    }

    /// The nominal gap before attempt `k` (1-based retries: `k = 1` is the first retry).
    fn gap(&self, k: u32) -> Duration {
        match &self.backoff {
            Backoff::Fixed { interval, .. } => *interval,
            Backoff::Exponential {
                initial,
                factor,
                max_interval,
                ..
            } => {
                let secs = initial.as_secs_f64() * factor.powi(k as i32 - 1);
                if !secs.is_finite() || secs >= max_interval.as_secs_f64() {
                    *max_interval
                } else {
                    Duration::from_secs_f64(secs)
                }
            }
            Backoff::Explicit { delays, .. } => delays[(k - 1) as usize],
        }
    }

    fn jitter(&self) -> f64 {
        match &self.backoff {
            Backoff::Fixed { .. } => 0.0,
            Backoff::Exponential { jitter, .. } | Backoff::Explicit { jitter, .. } => *jitter,
        }
    }

    /// When the next attempt of a cycle is due, or `None` when the cycle is exhausted.
    ///
    /// * `attempts_made` — attempts of this cycle so far (at least 1: one has just failed);
    /// * `anchor_ms` — the cycle's anchor (first attempt time, moved by earlier `Retry-After`s);
    /// * `now_ms` — the end of the failed attempt;
    /// * `retry_after` — the receiver's `Retry-After`, when the response was 429 or 503;
    /// * `unit_random` — a sample from `[-1, 1]` that scales the jitter (0 for none).
    ///
    /// Returns the due time and the (possibly moved) anchor.
    pub fn next_attempt(
        &self,
        attempts_made: u32,
        anchor_ms: u64,
        now_ms: u64,
        retry_after: Option<Duration>,
        unit_random: f64,
    ) -> Option<NextAttempt> {
        if attempts_made == 0 || attempts_made >= self.attempts() {
            return None;
        }
        let offset: Duration = (1..=attempts_made).map(|k| self.gap(k)).sum();
        let gap = self.gap(attempts_made);
        let wobble = gap.as_millis() as f64 * self.jitter() * unit_random.clamp(-1.0, 1.0);
        let nominal = (anchor_ms + offset.as_millis() as u64).saturating_add_signed(wobble as i64);
        let mut next = NextAttempt {
            due_ms: nominal.max(now_ms),
            anchor_ms,
        };
        if let Some(wait) = retry_after.filter(|_| self.honor_retry_after) {
            let earliest = now_ms + wait.min(self.max_retry_after).as_millis() as u64;
            if earliest > next.due_ms {
                next.anchor_ms += earliest - next.due_ms;
                next.due_ms = earliest;
            }
        }
        Some(next)
    }
}

/// The answer of [`Schedule::next_attempt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextAttempt {
    /// When the attempt is due (ms since the Unix epoch).
    pub due_ms: u64,
    /// The cycle's anchor from now on.
    pub anchor_ms: u64,
}

/// The `[schedule]` table as written; [`Schedule`] is its validated form.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    kind: String,
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    interval: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_attempts: Option<u32>,
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    max_duration: Option<Duration>,
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    initial: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    factor: Option<f64>,
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    max_interval: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jitter: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    delays: Vec<humantime_serde::Serde<Duration>>,
    #[serde(default)]
    honor_retry_after: bool,
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    max_retry_after: Option<Duration>,
}

impl TryFrom<RawSchedule> for Schedule {
    type Error = String;

    fn try_from(raw: RawSchedule) -> Result<Self, String> {
        let only = |kind: &str, allowed: &[&str]| -> Result<(), String> {
            let present = [
                ("interval", raw.interval.is_some()),
                ("max_attempts", raw.max_attempts.is_some()),
                ("max_duration", raw.max_duration.is_some()),
                ("initial", raw.initial.is_some()),
                ("factor", raw.factor.is_some()),
                ("max_interval", raw.max_interval.is_some()),
                ("max_retries", raw.max_retries.is_some()),
                ("jitter", raw.jitter.is_some()),
                ("delays", !raw.delays.is_empty()),
            ];
            match present
                .iter()
                .find(|(key, set)| *set && !allowed.contains(key))
            {
                Some((key, _)) => Err(format!("`{key}` does not apply to kind = \"{kind}\"")),
                None => Ok(()),
            }
        };
        let jitter = raw.jitter.unwrap_or(0.0);
        if !(0.0..=1.0).contains(&jitter) {
            return Err(format!("jitter {jitter} must be between 0 and 1"));
        }
        let backoff = match raw.kind.as_str() {
            "fixed" => {
                only("fixed", &["interval", "max_attempts", "max_duration"])?;
                let interval = raw.interval.ok_or("fixed schedule needs `interval`")?;
                if interval.is_zero() {
                    return Err("`interval` must be greater than zero".into());
                }
                if raw.max_attempts.is_none() && raw.max_duration.is_none() {
                    return Err("fixed schedule needs `max_attempts` or `max_duration`".into());
                }
                if raw.max_attempts == Some(0) {
                    return Err("`max_attempts` must be at least 1".into());
                }
                if let Some(window) = raw.max_duration {
                    let count = window.as_millis() / interval.as_millis().max(1) + 1;
                    if count > MAX_ATTEMPTS as u128 && raw.max_attempts.is_none() {
                        return Err(format!(
                            "this schedule makes {count} attempts; at most {MAX_ATTEMPTS} are allowed"
                        ));
                    }
                }
                Backoff::Fixed {
                    interval,
                    max_attempts: raw.max_attempts,
                    max_duration: raw.max_duration,
                }
            }
            "exponential" => {
                only(
                    "exponential",
                    &["initial", "factor", "max_interval", "max_retries", "jitter"],
                )?;
                let initial = raw.initial.ok_or("exponential schedule needs `initial`")?;
                let factor = raw.factor.unwrap_or(2.0);
                if !(factor.is_finite() && factor >= 1.0) {
                    return Err(format!("factor {factor} must be at least 1"));
                }
                let max_retries = raw
                    .max_retries
                    .ok_or("exponential schedule needs `max_retries`")?;
                if max_retries as usize >= MAX_ATTEMPTS {
                    return Err(format!("max_retries must be below {MAX_ATTEMPTS}"));
                }
                let max_interval = raw.max_interval.unwrap_or(Duration::MAX);
                if initial.is_zero() || max_interval < initial {
                    return Err("need 0 < initial <= max_interval".into());
                }
                Backoff::Exponential {
                    initial,
                    factor,
                    max_interval,
                    max_retries,
                    jitter,
                }
            }
            "explicit" => {
                only("explicit", &["delays", "jitter"])?;
                if raw.delays.len() >= MAX_ATTEMPTS {
                    return Err(format!("at most {} delays", MAX_ATTEMPTS - 1));
                }
                Backoff::Explicit {
                    delays: raw.delays.iter().map(|d| **d).collect(),
                    jitter,
                }
            }
            other => {
                return Err(format!(
                    "unknown schedule kind {other:?}; expected fixed, exponential or explicit"
                ));
            }
        };
        Ok(Schedule {
            backoff,
            honor_retry_after: raw.honor_retry_after,
            max_retry_after: raw.max_retry_after.unwrap_or(DEFAULT_MAX_RETRY_AFTER),
        })
    }
}

impl From<Schedule> for RawSchedule {
    fn from(schedule: Schedule) -> RawSchedule {
        let mut raw = RawSchedule {
            honor_retry_after: schedule.honor_retry_after,
            max_retry_after: Some(schedule.max_retry_after),
            ..RawSchedule::default()
        };
        match schedule.backoff {
            Backoff::Fixed {
                interval,
                max_attempts,
                max_duration,
            } => {
                raw.kind = "fixed".into();
                raw.interval = Some(interval);
                raw.max_attempts = max_attempts;
                raw.max_duration = max_duration;
            }
            Backoff::Exponential {
                initial,
                factor,
                max_interval,
                max_retries,
                jitter,
            } => {
                raw.kind = "exponential".into();
                raw.initial = Some(initial);
                raw.factor = Some(factor);
                raw.max_interval = (max_interval != Duration::MAX).then_some(max_interval);
                raw.max_retries = Some(max_retries);
                raw.jitter = Some(jitter);
            }
            Backoff::Explicit { delays, jitter } => {
                raw.kind = "explicit".into();
                raw.delays = delays.into_iter().map(Into::into).collect();
                raw.jitter = Some(jitter);
            }
        }
        raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(table: &str) -> Result<Schedule, String> {
        #[derive(Deserialize)]
        struct Doc {
            schedule: Schedule,
        }
        toml::from_str::<Doc>(&format!("[schedule]\n{table}"))
            .map(|d| d.schedule)
            .map_err(|e| e.to_string())
    }

    fn secs(offsets: &[Duration]) -> Vec<u64> {
        offsets.iter().map(Duration::as_secs).collect()
    }

    #[test]
    fn offsets_for_every_kind() {
        let table: &[(&str, Vec<u64>)] = &[
            (
                "kind = \"fixed\"\ninterval = \"1s\"\nmax_attempts = 3",
                vec![0, 1, 2],
            ),
            (
                "kind = \"fixed\"\ninterval = \"1h\"\nmax_duration = \"2h\"",
                vec![0, 3600, 7200],
            ),
            (
                "kind = \"fixed\"\ninterval = \"1h\"\nmax_duration = \"150m\"",
                vec![0, 3600, 7200],
            ),
            (
                "kind = \"fixed\"\ninterval = \"1h\"\nmax_duration = \"10h\"\nmax_attempts = 2",
                vec![0, 3600],
            ),
            (
                "kind = \"fixed\"\ninterval = \"1s\"\nmax_attempts = 1",
                vec![0],
            ),
            (
                "kind = \"exponential\"\ninitial = \"10s\"\nfactor = 3.0\nmax_interval = \"100s\"\nmax_retries = 4",
                vec![0, 10, 40, 130, 230],
            ),
            (
                "kind = \"exponential\"\ninitial = \"1s\"\nmax_retries = 3",
                vec![0, 1, 3, 7],
            ),
            (
                "kind = \"explicit\"\ndelays = [\"5s\", \"5m\", \"30m\"]",
                vec![0, 5, 305, 2105],
            ),
            ("kind = \"explicit\"\ndelays = []", vec![0]),
        ];
        for (text, expected) in table {
            let schedule = parse(text).unwrap();
            assert_eq!(&secs(&schedule.offsets()), expected, "{text}");
            assert_eq!(schedule.attempts() as usize, expected.len(), "{text}");
        }
    }

    #[test]
    fn gengo_window_has_49_attempts_ending_at_12h() {
        let s = parse("kind = \"fixed\"\ninterval = \"15m\"\nmax_duration = \"12h\"").unwrap();
        let offsets = s.offsets();
        assert_eq!(offsets.len(), 49);
        assert_eq!(*offsets.last().unwrap(), Duration::from_secs(12 * 3600));
    }

    #[test]
    fn invalid_schedules_are_refused() {
        let table = [
            ("kind = \"fixed\"\ninterval = \"1s\"", "max_attempts"),
            ("kind = \"fixed\"\nmax_attempts = 2", "interval"),
            (
                "kind = \"fixed\"\ninterval = \"0s\"\nmax_attempts = 2",
                "greater than zero",
            ),
            (
                "kind = \"fixed\"\ninterval = \"1s\"\nmax_attempts = 0",
                "at least 1",
            ),
            (
                "kind = \"fixed\"\ninterval = \"1s\"\nmax_duration = \"30d\"",
                "at most",
            ),
            (
                "kind = \"fixed\"\ninterval = \"1s\"\nmax_attempts = 2\njitter = 0.1",
                "jitter",
            ),
            ("kind = \"exponential\"\ninitial = \"1s\"", "max_retries"),
            (
                "kind = \"exponential\"\ninitial = \"1s\"\nmax_retries = 3\nfactor = 0.5",
                "factor",
            ),
            (
                "kind = \"exponential\"\ninitial = \"1m\"\nmax_interval = \"1s\"\nmax_retries = 3",
                "initial",
            ),
            (
                "kind = \"explicit\"\ndelays = [\"1s\"]\njitter = 2.0",
                "between 0 and 1",
            ),
            ("kind = \"explicit\"\ndelays = [\"soon\"]", "delays"),
            ("kind = \"linear\"", "unknown schedule kind"),
            (
                "kind = \"explicit\"\ndelays = []\nintervall = \"1s\"",
                "intervall",
            ),
        ];
        for (text, needle) in table {
            let err = parse(text).expect_err(text);
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn next_attempt_follows_the_offsets_from_the_anchor() {
        let s = parse("kind = \"explicit\"\ndelays = [\"5s\", \"5m\"]").unwrap();
        let anchor = 1_000_000;
        // A quick failure: the next attempt is exactly at its offset.
        let next = s.next_attempt(1, anchor, anchor + 10, None, 0.0).unwrap();
        assert_eq!(next.due_ms, anchor + 5_000);
        // A slow attempt that ended after the nominal time: due now, anchor unchanged.
        let next = s
            .next_attempt(1, anchor, anchor + 9_000, None, 0.0)
            .unwrap();
        assert_eq!((next.due_ms, next.anchor_ms), (anchor + 9_000, anchor));
        assert_eq!(
            s.next_attempt(2, anchor, anchor, None, 0.0).unwrap().due_ms,
            anchor + 305_000
        );
        assert_eq!(s.next_attempt(3, anchor, anchor, None, 0.0), None);
        assert_eq!(s.next_attempt(0, anchor, anchor, None, 0.0), None);
    }

    #[test]
    fn retry_after_lengthens_but_never_shortens_and_is_bounded() {
        let honoring = parse(
            "kind = \"fixed\"\ninterval = \"10s\"\nmax_attempts = 5\nhonor_retry_after = true\nmax_retry_after = \"1m\"",
        )
        .unwrap();
        let ignoring = parse("kind = \"fixed\"\ninterval = \"10s\"\nmax_attempts = 5").unwrap();
        let at = 0;
        let table = [
            // (schedule, retry_after secs, expected due, expected anchor)
            (&honoring, Some(30), 30_000, 20_000),
            (&honoring, Some(2), 10_000, 0),
            (&honoring, Some(3600), 60_000, 50_000),
            (&honoring, None, 10_000, 0),
            (&ignoring, Some(30), 10_000, 0),
        ];
        for (schedule, retry_after, due, anchor) in table {
            let next = schedule
                .next_attempt(1, at, at, retry_after.map(Duration::from_secs), 0.0)
                .unwrap();
            assert_eq!(
                (next.due_ms, next.anchor_ms),
                (due, anchor),
                "{retry_after:?}"
            );
        }
    }

    #[test]
    fn jitter_stays_within_its_fraction_of_the_gap() {
        let s = parse("kind = \"explicit\"\ndelays = [\"10s\"]\njitter = 0.2").unwrap();
        let early = s.next_attempt(1, 0, 0, None, -1.0).unwrap().due_ms;
        let late = s.next_attempt(1, 0, 0, None, 1.0).unwrap().due_ms;
        let wild = s.next_attempt(1, 0, 0, None, 7.0).unwrap().due_ms;
        assert_eq!((early, late, wild), (8_000, 12_000, 12_000));
    }
}
