//! An endpoint's rate limit: how often attempts to it may start.
//!
//! A customer who says "at most 20 calls a second" means that no second holds more than 20,
//! bursts included. So the limit is GCRA with no burst allowance (equivalently, a token bucket
//! of capacity one): each attempt may start no sooner than `1 / rate` after the one before it
//! actually started. The scheduler keeps one [`Pacer`] per limited endpoint, sleeps until its
//! next start is due, and never fails or counts a delivery for waiting.
//!
//! In a cluster the nodes' pacers alone would let each node start `rate` attempts a second.
//! So there, once its own pacer lets an attempt start, a runner reserves the start in the
//! shared store ([`Store::reserve_start`](crate::store::Store::reserve_start): one atomic
//! statement moves the endpoint's last start on) and waits for it. Another node may already
//! hold the start after it, so a start that began late (a busy machine) would come too close
//! to that one, and nothing can move it back. Hence a node that wakes more than
//! [`CLUSTER_LATENESS`] after its reserved start gives the start up and reserves another,
//! and reservations are spaced by the interval plus that tolerance shared out over a second's
//! starts ([`Pacer::spacing`]): any `rate` consecutive starts then still span a second.

use crate::model::Endpoint;
use crate::policy::Policy;

/// Where an endpoint's limit comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LimitSource {
    /// The endpoint's own `rate_limit`.
    Endpoint,
    /// Its policy's `[endpoint] rate_limit` default.
    Policy,
}

/// The limit that applies to an endpoint (attempts per second), and where it comes from: its
/// own, else its policy's default, else none.
pub(crate) fn limit_for(
    endpoint: &Endpoint,
    policy: Option<&Policy>,
) -> Option<(f64, LimitSource)> {
    match (
        endpoint.rate_limit,
        policy.and_then(|p| p.endpoint.rate_limit),
    ) {
        (Some(own), _) => Some((own, LimitSource::Endpoint)),
        (None, Some(default)) => Some((default, LimitSource::Policy)),
        (None, None) => None,
    }
}

/// GCRA state of one endpoint, in microseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Pacer {
    rate: f64,
    /// Time between two starts, rounded up: the limit is never exceeded by rounding.
    interval_us: u64,
    /// The theoretical arrival time: the earliest the next attempt may start.
    next_start_us: u64,
}

/// In a cluster: how late after its reserved start an attempt may still begin; a node that
/// wakes later gives the start up and reserves another.
pub(crate) const CLUSTER_LATENESS: std::time::Duration = std::time::Duration::from_millis(5);

impl Pacer {
    /// A pacer for `rate` attempts per second whose first attempt may start at once.
    pub(crate) fn new(rate: f64) -> Pacer {
        Pacer {
            rate,
            interval_us: interval_us(rate),
            next_start_us: 0,
        }
    }

    /// The limit, attempts per second.
    pub(crate) fn rate(&self) -> f64 {
        self.rate
    }

    /// The earliest time the next attempt may start (µs).
    pub(crate) fn next_start_us(&self) -> u64 {
        self.next_start_us
    }

    /// Starts an attempt at `now_us` if one may start: the next may then start one interval
    /// later. Otherwise says when one may.
    pub(crate) fn start(&mut self, now_us: u64) -> Result<(), u64> {
        if now_us < self.next_start_us {
            return Err(self.next_start_us);
        }
        self.next_start_us = now_us.saturating_add(self.interval_us);
        Ok(())
    }

    /// In a cluster: how far after the last start reserved by any node to reserve the next
    /// one. Starts may begin up to [`CLUSTER_LATENESS`] after their reservation, so `n`
    /// reservations in a row (`n` = a second's worth) are spaced by a second plus that
    /// lateness: any `n` consecutive starts then span at least a second.
    pub(crate) fn spacing(&self) -> std::time::Duration {
        let per_second = (self.rate.ceil() as u64).max(1);
        let margin = (CLUSTER_LATENESS.as_micros() as u64).div_ceil(per_second);
        std::time::Duration::from_micros(self.interval_us.saturating_add(margin))
    }

    /// In a cluster: a reserved start began at `now_us`; this node's next start is no sooner
    /// than one interval after it.
    pub(crate) fn began(&mut self, now_us: u64) {
        self.next_start_us = self
            .next_start_us
            .max(now_us.saturating_add(self.interval_us));
    }

    /// A new limit: the next start moves no later than one new interval after the last.
    pub(crate) fn set_rate(&mut self, rate: f64) {
        let old = self.interval_us;
        self.rate = rate;
        self.interval_us = interval_us(rate);
        if self.interval_us < old {
            let last_start = self.next_start_us.saturating_sub(old);
            self.next_start_us = last_start.saturating_add(self.interval_us);
        }
    }
}

fn interval_us(rate: f64) -> u64 {
    ((1_000_000.0 / rate).ceil() as u64).max(1)
}

/// Microseconds since the Unix epoch, now.
pub(crate) fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_are_spaced_by_the_interval_without_bursts() {
        // (now µs, started?, next start after it)
        let mut pacer = Pacer::new(20.0); // 50 ms
        let table = [
            (1_000_000, Ok(()), 1_050_000),
            (1_000_001, Err(1_050_000), 1_050_000),
            (1_049_999, Err(1_050_000), 1_050_000),
            (1_050_000, Ok(()), 1_100_000),
            // Idle for a while: no credit is saved up, the next start is one interval on.
            (5_000_000, Ok(()), 5_050_000),
            (5_000_010, Err(5_050_000), 5_050_000),
            // A late start moves the next one with it.
            (5_070_000, Ok(()), 5_120_000),
        ];
        for (now, started, next) in table {
            assert_eq!(pacer.start(now), started, "at {now}");
            assert_eq!(pacer.next_start_us(), next, "after {now}");
        }
    }

    #[test]
    fn no_second_holds_more_than_the_limit() {
        for rate in [0.5, 3.0, 20.0, 50.0, 333.0, 1000.0] {
            let mut pacer = Pacer::new(rate);
            let mut starts = Vec::new();
            let mut now = 0;
            while starts.len() < 2_000 && now < 20_000_000 {
                if pacer.start(now).is_ok() {
                    starts.push(now);
                }
                now += 137; // an arbitrary clock step
            }
            let most = starts
                .iter()
                .enumerate()
                .map(|(i, &t)| {
                    starts[i..]
                        .iter()
                        .take_while(|&&s| s < t + 1_000_000)
                        .count()
                })
                .max()
                .unwrap();
            assert!(
                most as f64 <= rate.max(1.0),
                "{rate}/s: {most} in one second"
            );
        }
    }

    #[test]
    fn reservations_in_a_cluster_leave_room_for_a_late_start() {
        // 20/s: 50 ms, plus 5 ms shared out over 20 starts.
        let pacer = Pacer::new(20.0);
        assert_eq!(pacer.spacing(), std::time::Duration::from_micros(50_250));
        // 20 reserved starts in a row, the first as late as tolerated and the last on time,
        // still span a second.
        let spacing = pacer.spacing().as_micros() as u64;
        let late = CLUSTER_LATENESS.as_micros() as u64;
        assert!(20 * spacing - late >= 1_000_000);
        // 1/s: a second plus the whole tolerance.
        assert_eq!(
            Pacer::new(1.0).spacing(),
            std::time::Duration::from_millis(1_005)
        );
    }

    #[test]
    fn a_reserved_start_paces_the_node() {
        let mut pacer = Pacer::new(20.0); // 50 ms
        pacer.start(1_000_000).unwrap();
        // Another node held the next start: ours was reserved 80 ms on and began then.
        pacer.began(1_080_000);
        assert_eq!(pacer.start(1_100_000), Err(1_130_000));
        // A start that began before what the pacer allows moves nothing.
        pacer.began(1_000_000);
        assert_eq!(pacer.next_start_us(), 1_130_000);
    }

    #[test]
    fn a_faster_limit_applies_from_the_last_start() {
        let mut pacer = Pacer::new(1.0);
        pacer.start(10_000_000).unwrap();
        assert_eq!(pacer.next_start_us(), 11_000_000);
        pacer.set_rate(10.0);
        assert_eq!(pacer.next_start_us(), 10_100_000);
        pacer.set_rate(2.0); // slower: the start already promised is kept
        assert_eq!(pacer.next_start_us(), 10_100_000);
    }

    #[test]
    fn the_endpoint_limit_wins_over_the_policy_default() {
        let mut endpoint: Endpoint = serde_json::from_value(serde_json::json!({
            "id": crate::model::EndpointId::new(), "tenant": "acme", "url": "https://tms.example/cb",
            "policy": "p", "enabled": true, "created_at": 0, "updated_at": 0,
        }))
        .unwrap();
        let policy = Policy::from_toml(
            "p",
            "name = \"p\"\n[schedule]\nkind = \"fixed\"\ninterval = \"1s\"\nmax_attempts = 2\n[endpoint]\nrate_limit = 50\n",
        )
        .unwrap();
        assert_eq!(
            limit_for(&endpoint, Some(&policy)),
            Some((50.0, LimitSource::Policy))
        );
        endpoint.rate_limit = Some(20.0);
        assert_eq!(
            limit_for(&endpoint, Some(&policy)),
            Some((20.0, LimitSource::Endpoint))
        );
        endpoint.rate_limit = None;
        assert_eq!(limit_for(&endpoint, None), None);
    }
}
