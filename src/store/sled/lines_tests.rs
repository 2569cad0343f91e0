//! Lines in the sled layout: a store written with the first layout (waiting deliveries at `W`
//! places) is counted right before the upgrade and keeps every line's order after it. And a
//! message lists its deliveries in its record up to a limit, beyond it with an `m` key each,
//! and is listed and purged either way.

use serde::Serialize;
use serde_json::value::RawValue;
use sled::Batch;

use super::*;
use crate::model::{DeliveryStatus, Endpoint, EndpointId, Message, MessageId};
use crate::store::codec::encode;
use crate::store::{MessageWrite, SledOptions, SledStore, Store, Transition};

const KEY: &str = "job-7";

/// The line record of the first layout.
#[derive(Serialize)]
struct FirstLayoutLine {
    front: DeliveryId,
    first_place: u64,
    next_place: u64,
}

fn options() -> SledOptions {
    SledOptions {
        secret_key: Some([7; 32]),
        ..SledOptions::default()
    }
}

fn endpoint() -> Endpoint {
    Endpoint::sample("tolq")
}

/// A keyed message with one pending delivery to `endpoint`, due at once.
fn keyed(endpoint: EndpointId) -> MessageWrite {
    let message = Message {
        id: MessageId::new(),
        tenant: "acme".into(),
        event_type: "e".into(),
        payload: RawValue::from_string("{}".into()).unwrap(),
        callback_url: None,
        idempotency_key: None,
        dedup_key: None,
        ordering_key: Some(KEY.into()),
        traceparent: None,
        created_at: 1,
    };
    let delivery = Delivery {
        id: DeliveryId::new(),
        message_id: message.id,
        endpoint_id: endpoint,
        url_override: None,
        status: DeliveryStatus::Pending,
        cycle: 1,
        cycle_attempts: 0,
        total_attempts: 0,
        anchor_ms: 1,
        next_attempt_at: Some(1),
        last_status_code: None,
        last_error: None,
        created_at: 1,
        updated_at: 1,
    };
    MessageWrite {
        message,
        deliveries: vec![delivery],
    }
}

/// Rewrites the store's one line into the first layout: `front`, then `waiting` at places
/// 0, 2, 3, ... (place 1 was given up by a cancelled delivery).
fn first_layout(
    tree: &sled::Tree,
    endpoint: EndpointId,
    front: DeliveryId,
    waiting: &[DeliveryId],
) {
    let line = keys::line(endpoint, KEY);
    let mut batch = Batch::default();
    let mut place = 0u64;
    for id in std::iter::once(&front).chain(waiting) {
        let value = tree.get(keys::delivery(*id)).unwrap().unwrap();
        batch.insert(keys::delivery(*id), split(&value).1);
        if *id == front {
            continue;
        }
        let mut place_key = vec![keys::WAITING];
        place_key.extend_from_slice(&line[1..]);
        place_key.push(0);
        place_key.extend_from_slice(&place.to_be_bytes());
        batch.insert(keys::waiting_place(*id), place_key.as_slice());
        batch.insert(place_key, id.as_bytes());
        place += if place == 0 { 2 } else { 1 };
    }
    let record = FirstLayoutLine {
        front,
        first_place: 0,
        next_place: place,
    };
    batch.insert(line, encode(&record).unwrap());
    tree.apply_batch(batch).unwrap();
}

async fn claimable(store: &SledStore, endpoint: EndpointId) -> Vec<DeliveryId> {
    claimable_at(store, endpoint, 10).await
}

async fn claimable_at(store: &SledStore, endpoint: EndpointId, now: u64) -> Vec<DeliveryId> {
    let leases: Vec<_> = store
        .claim(
            endpoint,
            now,
            100,
            std::time::Duration::from_secs(30),
            usize::MAX,
            &[],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.lease)
        .collect();
    store.release(&leases).await.unwrap();
    leases.iter().map(|l| l.delivery_id).collect()
}

/// A store in `dir` with one endpoint and `n` keyed deliveries to it, in one line.
async fn line_of(dir: &std::path::Path, n: usize) -> (SledStore, EndpointId, Vec<DeliveryId>) {
    let store = SledStore::open(dir, &options()).unwrap();
    let endpoint = endpoint();
    store.put_endpoint(&endpoint).await.unwrap();
    let writes: Vec<_> = (0..n).map(|_| keyed(endpoint.id)).collect();
    store.insert_messages(&writes).await.unwrap();
    let ids = writes.iter().map(|w| w.deliveries[0].id).collect();
    (store, endpoint.id, ids)
}

/// Applies `change` to `id` as a transition; `release`: it leaves its line.
async fn transition(
    store: &SledStore,
    id: DeliveryId,
    change: impl FnOnce(&mut Delivery),
    release: bool,
) {
    let expected = store.delivery(id).await.unwrap().unwrap();
    let mut delivery = expected.clone();
    change(&mut delivery);
    let transition = Transition {
        expected,
        delivery,
        release: release.then(|| KEY.into()),
    };
    store.apply_transitions(&[transition], None).await.unwrap();
}

/// Cancels `id`, which leaves its line.
async fn cancel(store: &SledStore, id: DeliveryId) {
    let cancelled = |d: &mut Delivery| {
        d.status = DeliveryStatus::Failed;
        d.next_attempt_at = None;
    };
    transition(store, id, cancelled, true).await;
}

#[tokio::test]
async fn lines_of_the_first_layout_are_counted_and_keep_their_order_once_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let (store, endpoint, ids) = line_of(dir.path(), 4).await;
    first_layout(&store.tree().unwrap(), endpoint, ids[0], &ids[1..]);
    store.sync().await.unwrap();
    drop(store);

    let report = SledStore::check_dir(dir.path(), &options()).unwrap();
    assert_eq!(
        (report.pending, report.problems.len()),
        (4, 0),
        "{report:?}"
    );

    let store = SledStore::open(dir.path(), &options()).unwrap();
    let tree = store.tree().unwrap();
    for prefix in [keys::WAITING, keys::WAITING_PLACE] {
        assert!(tree.scan_prefix([prefix]).next().is_none(), "{prefix}");
    }
    assert_eq!(waiting(&tree).unwrap(), 3);
    assert_eq!(claimable(&store, endpoint).await, [ids[0]]);
    cancel(&store, ids[2]).await;
    cancel(&store, ids[0]).await;
    assert_eq!(claimable(&store, endpoint).await, [ids[1]]);
    cancel(&store, ids[1]).await;
    assert_eq!(claimable(&store, endpoint).await, [ids[3]]);
    assert_eq!(store.pending_count().await.unwrap(), 1);
    cancel(&store, ids[3]).await;
    assert!(tree.scan_prefix([keys::LINE]).next().is_none());
}

#[test]
fn a_link_carries_the_next_deliverys_due_time_and_links_without_it_still_read() {
    let (a, b) = (DeliveryId::new(), DeliveryId::new());
    let link = Link {
        prev: Some(a),
        next: Some(b),
        next_due: Some(42),
    };
    let value = linked(link, b"record");
    assert_eq!(split(&value), (link, &b"record"[..]));
    // As first linked: the ids only.
    let mut first = vec![LINKED];
    first.extend_from_slice(a.as_bytes());
    first.extend_from_slice(b.as_bytes());
    first.extend_from_slice(b"record");
    let old = Link {
        next_due: None,
        ..link
    };
    assert_eq!(split(&first), (old, &b"record"[..]));
    // A last delivery has no successor, so no due time either.
    let last = Link {
        prev: Some(a),
        next: None,
        next_due: None,
    };
    assert_eq!(split(&linked(last, b"r")), (last, &b"r"[..]));
}

#[tokio::test]
async fn a_line_passes_on_at_the_next_deliverys_own_due_time_even_once_retried_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let (store, endpoint, ids) = line_of(dir.path(), 3).await;

    // The second, waiting, is moved to 5 s in its place; the third stays due at once.
    transition(&store, ids[1], |d| d.next_attempt_at = Some(5_000), false).await;
    assert_eq!(claimable(&store, endpoint).await, [ids[0]]);

    cancel(&store, ids[0]).await;
    assert!(
        claimable(&store, endpoint).await.is_empty(),
        "the new front is due at its own time"
    );
    assert_eq!(claimable_at(&store, endpoint, 5_000).await, [ids[1]]);
    cancel(&store, ids[1]).await;
    assert_eq!(claimable(&store, endpoint).await, [ids[2]]);
}

/// A message with `n` pending deliveries to `endpoint`, not keyed.
fn fan_out(endpoint: EndpointId, n: usize) -> MessageWrite {
    let mut write = keyed(endpoint);
    write.message.ordering_key = None;
    let first = write.deliveries[0].clone();
    write.deliveries = (0..n)
        .map(|_| Delivery {
            id: DeliveryId::new(),
            ..first.clone()
        })
        .collect();
    write
}

#[tokio::test]
async fn a_message_lists_its_deliveries_up_to_the_limit_and_has_delivery_keys_beyond_it() {
    use super::super::queue::LISTED_DELIVERIES;
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path(), &options()).unwrap();
    let endpoint = endpoint();
    store.put_endpoint(&endpoint).await.unwrap();
    let tree = store.tree().unwrap();
    let limit = LISTED_DELIVERIES;
    for (n, delivery_keys) in [(limit, 0), (limit + 1, limit + 1)] {
        let write = fan_out(endpoint.id, n);
        store
            .insert_messages(std::slice::from_ref(&write))
            .await
            .unwrap();
        let id = write.message.id;
        let keys_written = tree
            .scan_prefix(keys::message_deliveries_prefix(id))
            .count();
        assert_eq!(keys_written, delivery_keys, "{n} deliveries");
        let listed = store.message_deliveries(id).await.unwrap();
        assert_eq!(listed.len(), n);

        let finished = |expected: Delivery| {
            let mut delivery = expected.clone();
            delivery.status = DeliveryStatus::Failed;
            delivery.next_attempt_at = None;
            Transition {
                expected,
                delivery,
                release: None,
            }
        };
        let transitions: Vec<_> = listed.into_iter().map(finished).collect();
        store.apply_transitions(&transitions, None).await.unwrap();
        let page = store.purge_page(u64::MAX >> 17, None, 10).await.unwrap();
        assert_eq!((page.messages, page.deliveries), (1, n as u64), "{page:?}");
        assert!(tree.scan_prefix([keys::MESSAGE_DELIVERY]).next().is_none());
    }
}
