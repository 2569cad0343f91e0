//! Retention: housekeeping purges old history in pages and never touches pending deliveries.

mod common;

use std::time::Duration;

use common::fixtures::{put_endpoint, put_message, record_attempt};
use herald::store::{SledOptions, SledStore, Store};
use herald::{DeliveryStatus, Error, Herald};

const DAY: u64 = 86_400_000;

#[tokio::test]
async fn housekeeping_purges_old_history_and_keeps_new_and_pending() {
    let dir = tempfile::tempdir().unwrap();
    let now = herald::model::now_ms();
    let old = now - 20 * DAY;
    let (endpoint, old_done, old_pending, recent) = {
        let store = SledStore::open(dir.path(), &SledOptions::default()).unwrap();
        let endpoint = put_endpoint(&store).await;
        // 600 old finished messages: more than one purge page.
        let mut old_done = Vec::new();
        for i in 0..600 {
            let (message, delivery) =
                put_message(&store, endpoint, old + i, DeliveryStatus::Succeeded).await;
            record_attempt(&store, endpoint, delivery, old + i, true).await;
            old_done.push((message, delivery));
        }
        // An old delivery still pending (e.g. held): kept, but its old attempts go.
        let old_pending = put_message(&store, endpoint, old, DeliveryStatus::Pending).await;
        record_attempt(&store, endpoint, old_pending.1, old, false).await;
        record_attempt(&store, endpoint, old_pending.1, now - DAY, false).await;
        // A recent finished message: kept whole.
        let recent = put_message(&store, endpoint, now - DAY, DeliveryStatus::Failed).await;
        record_attempt(&store, endpoint, recent.1, now - DAY, false).await;
        store.sync().await.unwrap();
        (endpoint, old_done, old_pending, recent)
    };

    let herald = Herald::builder().data_dir(dir.path()).open().await.unwrap();
    assert_eq!(
        herald.endpoint_stats(endpoint, 30).await.unwrap()[9].attempts,
        601
    );
    let report = herald
        .housekeeping(Duration::from_secs(14 * 86_400))
        .await
        .unwrap();
    assert_eq!((report.messages, report.deliveries), (600, 600));
    assert_eq!(
        report.attempts, 601,
        "600 of purged deliveries + 1 old attempt of a kept one"
    );
    assert!(report.rollups >= 1);

    for (message, delivery) in &old_done {
        assert!(matches!(
            herald.message(*message).await,
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            herald.delivery(*delivery).await,
            Err(Error::NotFound(_))
        ));
    }
    let pending = herald.delivery(old_pending.1).await.unwrap();
    assert_eq!(
        pending.status,
        DeliveryStatus::Pending,
        "pending deliveries are never purged"
    );
    assert!(herald.message(old_pending.0).await.is_ok());
    let kept: Vec<u64> = herald
        .attempts(old_pending.1)
        .await
        .unwrap()
        .iter()
        .map(|a| a.started_at)
        .collect();
    assert_eq!(
        kept,
        vec![now - DAY],
        "only the attempt inside the retention stays"
    );
    assert!(herald.message(recent.0).await.is_ok());
    assert_eq!(herald.attempts(recent.1).await.unwrap().len(), 1);
    let stats = herald.endpoint_stats(endpoint, 30).await.unwrap();
    assert_eq!(stats[9].attempts, 0, "old roll-ups are purged");
    assert_eq!(stats[28].attempts, 2, "yesterday's roll-up stays");

    let again = herald
        .housekeeping(Duration::from_secs(14 * 86_400))
        .await
        .unwrap();
    assert_eq!(
        again,
        herald::PurgeReport::default(),
        "a second run finds nothing"
    );
    herald.shutdown().await.unwrap();
}
