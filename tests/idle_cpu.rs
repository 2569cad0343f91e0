//! The scheduler sleeps until the next due time: pending deliveries cost no CPU meanwhile.
//! (A test binary of its own: it measures the CPU time of the whole process.)

mod common;

use std::time::Duration;

use common::{Receiver, Reply, endpoint, open, quick_policy};
use herald::{DeliveryFilter, DeliveryStatus, NewMessage};
use serde_json::json;

/// CPU time (user + system) of this process, from /proc.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

#[tokio::test]
async fn deliveries_due_in_an_hour_cost_no_cpu_meanwhile() {
    let receiver = Receiver::start(|_, _| Reply::Status(500, "first attempt fails")).await;
    let dir = tempfile::tempdir().unwrap();
    let hourly = quick_policy("hourly", "1h", 2);
    let herald = open(dir.path(), vec![hourly]).await;
    herald
        .create_endpoint(endpoint("acme", receiver.url(), "hourly"))
        .await
        .unwrap();
    let mut outcomes = herald.outcomes();
    let sends = (0..1000).map(|i| {
        let herald = herald.clone();
        async move {
            herald
                .send(NewMessage::new("acme", "e", &json!({ "i": i })).unwrap())
                .await
                .unwrap()
        }
    });
    futures_util::future::join_all(sends).await;
    for _ in 0..1000 {
        tokio::time::timeout(Duration::from_secs(20), outcomes.next())
            .await
            .unwrap()
            .unwrap();
    }
    let pending = herald
        .deliveries(&DeliveryFilter {
            status: Some(DeliveryStatus::Pending),
            limit: 2000,
            ..DeliveryFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(pending.len(), 1000);

    // Let the lazy flush of the outcomes settle, then measure an idle stretch.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = cpu_time();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let used = cpu_time() - before;
    assert!(
        used <= Duration::from_millis(150),
        "idle for 3s used {used:?} of CPU"
    );
    assert_eq!(receiver.count(), 1000);
}
