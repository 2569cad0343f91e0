//! What `/metrics` says about each metric: a `# HELP` line for every one, and histograms with
//! buckets (which Prometheus can aggregate over instances, unlike summaries' quantiles).

use metrics::{describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Attempt durations, in seconds: from a fast local receiver to the longest policy timeout.
const SECONDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Group sizes (writers sharing an fsync, outcomes sharing a store write): whole numbers.
const GROUP_SIZES: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Installs the Prometheus recorder with herald's buckets and descriptions.
pub fn install() -> Result<PrometheusHandle, String> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_size".into()), GROUP_SIZES))
        .map_err(|e| format!("metrics: {e}"))?
        .install_recorder()
        .map_err(|e| format!("metrics: {e}"))?;
    describe();
    Ok(handle)
}

/// One line per metric herald records.
fn describe() {
    describe_counter!(
        "herald_messages_accepted_total",
        "Messages accepted and stored (sends with a repeated idempotency key not counted)"
    );
    describe_counter!(
        "herald_messages_unrouted_total",
        "Messages accepted that no endpoint of their tenant takes (unrouted = accept)"
    );
    describe_counter!(
        "herald_attempts_total",
        "Delivery attempts by policy and outcome (success, rejected, timeout, connect, refused, ...)"
    );
    describe_counter!(
        "herald_rate_limit_starts_given_up_total",
        "In a cluster: reserved starts of rate-limited attempts given up because the node woke too late for them (another is reserved)"
    );
    describe_histogram!(
        "herald_attempt_duration_seconds",
        "Duration of one delivery attempt, connect to last response byte, by policy"
    );
    describe_counter!(
        "herald_deliveries_finished_total",
        "Deliveries that reached a final status (succeeded, failed, skipped), by policy"
    );
    describe_counter!(
        "herald_endpoints_disabled_total",
        "Endpoints disabled by herald after consecutive failures or a 410"
    );
    describe_counter!(
        "herald_fsyncs_total",
        "Store flushes to disk for accepted messages (one per group commit)"
    );
    describe_histogram!(
        "herald_group_commit_size",
        "Sends that shared one store write and fsync"
    );
    describe_histogram!(
        "herald_record_group_size",
        "Attempt outcomes recorded in one store write"
    );
    describe_counter!(
        "herald_purged_messages_total",
        "Finished messages removed by housekeeping (retention)"
    );
    describe_counter!(
        "herald_purged_attempts_total",
        "Attempt records removed by housekeeping (retention)"
    );
    describe_counter!(
        "herald_test_sends_total",
        "Test events sent with POST /admin/endpoints/{id}/test"
    );
    describe_gauge!(
        "herald_in_flight",
        "Deliveries claimed and being attempted now"
    );
    describe_gauge!(
        "herald_deliveries_pending",
        "Deliveries waiting for an attempt, pending or held"
    );
    describe_gauge!(
        "herald_endpoints_disabled",
        "Endpoints currently disabled (their deliveries are held)"
    );
}
