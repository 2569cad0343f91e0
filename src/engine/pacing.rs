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
//! hold the start after it, so a start that began late (a busy machine, a slow answer) would
//! come too close to that one, and nothing can move it back. Hence each reservation declares
//! a tolerance: the round trip to the store as recently measured ([`RoundTrip`]) plus
//! [`CLUSTER_LATENESS`] for waking up. A node that begins later than that after its reserved
//! time, measured from when it asked, gives the start up and reserves another; and the store
//! spaces reservations by the interval plus the largest tolerance shared out over a second's
//! starts: any `rate` consecutive starts then still span a second.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::model::Endpoint;
use crate::policy::Policy;
use crate::store::StartRequest;

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

/// In a cluster: how late after its reserved start an attempt may still begin, beyond the
/// round trip of the reservation; a node that wakes later gives the start up and reserves
/// another.
pub(crate) const CLUSTER_LATENESS: Duration = Duration::from_millis(5);

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

    /// In a cluster: the start to reserve for this endpoint, for a node that may begin its
    /// attempt up to `tolerance` after the reserved time.
    pub(crate) fn start_request(&self, tolerance: Duration) -> StartRequest {
        StartRequest {
            interval: Duration::from_micros(self.interval_us),
            per_second: (self.rate.ceil() as u32).max(1),
            tolerance,
        }
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

/// The round trip of a reservation to the shared store, as this node measures it: the
/// largest of the recent ones (each reservation lowers the estimate by an eighth unless it
/// took longer). What a node declares it may be late by follows it, so a node far from the
/// database keeps its starts instead of giving every one up.
#[derive(Debug, Default)]
pub(crate) struct RoundTrip(AtomicU64);

impl RoundTrip {
    /// How late after its reserved time this node may begin an attempt.
    pub(crate) fn tolerance(&self) -> Duration {
        CLUSTER_LATENESS + Duration::from_micros(self.0.load(Ordering::Relaxed))
    }

    /// A reservation took `took`, asked to answered.
    pub(crate) fn observe(&self, took: Duration) {
        let took = took.as_micros() as u64;
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |estimate| {
                Some(took.max(estimate - estimate / 8))
            });
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
        let pacer = Pacer::new(20.0);
        let tolerance = Duration::from_millis(6);
        let request = pacer.start_request(tolerance);
        assert_eq!(request.interval, Duration::from_millis(50));
        assert_eq!(request.per_second, 20);
        // The store spaces reservations by the interval plus the tolerance shared out over a
        // second's starts: 20 in a row, the first as late as tolerated and the last on time,
        // still span a second.
        let spacing = request.interval + request.tolerance / request.per_second;
        assert!(spacing * 20 - tolerance >= Duration::from_secs(1));
        // A fractional limit rounds the starts a second up, the interval too.
        let request = Pacer::new(2.5).start_request(tolerance);
        assert_eq!(
            (request.interval, request.per_second),
            (Duration::from_millis(400), 3)
        );
    }

    #[test]
    fn the_tolerance_follows_the_round_trips_to_the_store() {
        let round_trip = RoundTrip::default();
        assert_eq!(round_trip.tolerance(), CLUSTER_LATENESS);
        round_trip.observe(Duration::from_millis(16));
        assert_eq!(
            round_trip.tolerance(),
            CLUSTER_LATENESS + Duration::from_millis(16)
        );
        // Faster answers lower it by an eighth each; a slower one raises it at once.
        round_trip.observe(Duration::from_micros(300));
        assert_eq!(
            round_trip.tolerance(),
            CLUSTER_LATENESS + Duration::from_millis(14)
        );
        round_trip.observe(Duration::from_millis(20));
        assert_eq!(
            round_trip.tolerance(),
            CLUSTER_LATENESS + Duration::from_millis(20)
        );
        for _ in 0..100 {
            round_trip.observe(Duration::from_micros(300));
        }
        assert_eq!(
            round_trip.tolerance(),
            CLUSTER_LATENESS + Duration::from_micros(300)
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
