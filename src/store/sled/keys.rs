//! Key layout of the sled keyspace.
//!
//! Everything lives in one tree so that a state change spanning several records is a single
//! atomic `apply_batch`. The first byte says what a key is; fixed-width big-endian numbers keep
//! range scans in time order.
//!
//! | prefix | key                                   | value                         |
//! |--------|---------------------------------------|-------------------------------|
//! | `E`    | endpoint id                           | endpoint (sealed)             |
//! | `T`    | tenant, 0, endpoint id                | —  (tenant → endpoints)       |
//! | `M`    | message id                            | message header (with its delivery ids) + payload |
//! | `m`    | message id, delivery id               | —  (message → deliveries, for records that do not list them) |
//! | `D`    | delivery id                           | delivery (in an ordering line: with its neighbours, see `lines`) |
//! | `Q`    | endpoint id, due ms, delivery id      | —  (the due index)            |
//! | `A`    | delivery id, attempt number           | attempt                       |
//! | `I`    | tenant, 0, idempotency key            | message id                    |
//! | `K`    | endpoint id, dedup key                | payload SHA-256 of last success |
//! | `F`    | endpoint id                           | endpoint health (failures, disablement) |
//! | `G`    | endpoint id                           | a deleted endpoint's URL, redacted (for its deliveries' history) |
//! | `S`    | endpoint id, day (u32 BE)             | daily roll-up                 |
//! | `J`    | job id                                | bulk replay job               |
//! | `H`    | endpoint id, ordering key             | an ordering line: its last delivery |
//! | `W`    | endpoint id, ordering key, 0, place (u64 BE) | first layout of lines: a waiting delivery (rewritten at open) |
//! | `R`    | delivery id                           | first layout of lines: its `W` key (rewritten at open) |
//! | `P`    | —                                     | pending deliveries (u64 BE)   |
//! | `C`    | —                                     | counters: store id, durable-write sequence (see `ledger`) |
//! | `X`    | —                                     | a sealed known value: proves the secret key opens this store |

use crate::model::{DeliveryId, EndpointId, MessageId};

/// The day field of a roll-up key (`S`, endpoint id, day).
pub(crate) fn stats_day(key: &[u8]) -> Option<u32> {
    key.get(17..21)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
}

pub(crate) const ENDPOINT: u8 = b'E';
pub(crate) const TENANT: u8 = b'T';
pub(crate) const MESSAGE: u8 = b'M';
pub(crate) const MESSAGE_DELIVERY: u8 = b'm';
pub(crate) const DELIVERY: u8 = b'D';
pub(crate) const DUE: u8 = b'Q';
pub(crate) const ATTEMPT: u8 = b'A';
pub(crate) const IDEMPOTENCY: u8 = b'I';
pub(crate) const DEDUP: u8 = b'K';
pub(crate) const FAILURES: u8 = b'F';
pub(crate) const DELETED_ENDPOINT: u8 = b'G';
pub(crate) const STATS: u8 = b'S';
pub(crate) const JOB: u8 = b'J';
pub(crate) const LINE: u8 = b'H';
pub(crate) const WAITING: u8 = b'W';
pub(crate) const WAITING_PLACE: u8 = b'R';
/// The pending-delivery count: the number of `Q` entries.
pub(crate) const PENDING: &[u8] = b"P";
/// The store's counters (`ledger::Counters`).
pub(crate) const COUNTERS: &[u8] = b"C";
/// A sealed known value, opened at start-up to prove the key is this store's.
pub(crate) const KEY_CHECK: &[u8] = b"X";

fn key(prefix: u8, parts: &[&[u8]]) -> Vec<u8> {
    let len = 1 + parts.iter().map(|p| p.len()).sum::<usize>();
    let mut key = Vec::with_capacity(len);
    key.push(prefix);
    for part in parts {
        key.extend_from_slice(part);
    }
    key
}

pub(crate) fn endpoint(id: EndpointId) -> Vec<u8> {
    key(ENDPOINT, &[id.as_bytes()])
}

pub(crate) fn tenant_prefix(tenant: &str) -> Vec<u8> {
    key(TENANT, &[tenant.as_bytes(), &[0]])
}

pub(crate) fn tenant_endpoint(tenant: &str, id: EndpointId) -> Vec<u8> {
    key(TENANT, &[tenant.as_bytes(), &[0], id.as_bytes()])
}

pub(crate) fn message(id: MessageId) -> Vec<u8> {
    key(MESSAGE, &[id.as_bytes()])
}

pub(crate) fn message_delivery(message: MessageId, delivery: DeliveryId) -> Vec<u8> {
    key(MESSAGE_DELIVERY, &[message.as_bytes(), delivery.as_bytes()])
}

pub(crate) fn message_deliveries_prefix(message: MessageId) -> Vec<u8> {
    key(MESSAGE_DELIVERY, &[message.as_bytes()])
}

pub(crate) fn delivery(id: DeliveryId) -> Vec<u8> {
    key(DELIVERY, &[id.as_bytes()])
}

pub(crate) fn due(endpoint: EndpointId, due_ms: u64, delivery: DeliveryId) -> Vec<u8> {
    key(
        DUE,
        &[
            endpoint.as_bytes(),
            &due_ms.to_be_bytes(),
            delivery.as_bytes(),
        ],
    )
}

pub(crate) fn due_prefix(endpoint: EndpointId) -> Vec<u8> {
    key(DUE, &[endpoint.as_bytes()])
}

/// Splits a due key into (endpoint, due ms, delivery).
pub(crate) fn parse_due(key: &[u8]) -> Option<(EndpointId, u64, DeliveryId)> {
    if key.len() != 1 + 16 + 8 + 16 || key[0] != DUE {
        return None;
    }
    let endpoint = EndpointId::from_slice(&key[1..17])?;
    let due_ms = u64::from_be_bytes(key[17..25].try_into().ok()?);
    let delivery = DeliveryId::from_slice(&key[25..41])?;
    Some((endpoint, due_ms, delivery))
}

pub(crate) fn attempt(delivery: DeliveryId, number: u32) -> Vec<u8> {
    key(ATTEMPT, &[delivery.as_bytes(), &number.to_be_bytes()])
}

pub(crate) fn attempts_prefix(delivery: DeliveryId) -> Vec<u8> {
    key(ATTEMPT, &[delivery.as_bytes()])
}

pub(crate) fn idempotency(tenant: &str, idempotency_key: &str) -> Vec<u8> {
    key(
        IDEMPOTENCY,
        &[tenant.as_bytes(), &[0], idempotency_key.as_bytes()],
    )
}

pub(crate) fn failures(endpoint: EndpointId) -> Vec<u8> {
    key(FAILURES, &[endpoint.as_bytes()])
}

pub(crate) fn deleted_endpoint(id: EndpointId) -> Vec<u8> {
    key(DELETED_ENDPOINT, &[id.as_bytes()])
}

pub(crate) fn stats(endpoint: EndpointId, day: u32) -> Vec<u8> {
    key(STATS, &[endpoint.as_bytes(), &day.to_be_bytes()])
}

pub(crate) fn job(id: &uuid::Uuid) -> Vec<u8> {
    key(JOB, &[id.as_bytes()])
}

/// An ordering line's record. Ordering keys hold no control characters (checked at accept);
/// the first layout's `W` keys ended the key with a 0 to keep one line's places apart from a
/// longer key's.
pub(crate) fn line(endpoint: EndpointId, ordering_key: &str) -> Vec<u8> {
    key(LINE, &[endpoint.as_bytes(), ordering_key.as_bytes()])
}

/// Every line of one endpoint (`H`), or every due entry (`Q`).
pub(crate) fn endpoint_prefix(prefix: u8, endpoint: EndpointId) -> Vec<u8> {
    key(prefix, &[endpoint.as_bytes()])
}

/// Where a waiting delivery stood in a line of the first layout (its `W` key).
pub(crate) fn waiting_place(delivery: DeliveryId) -> Vec<u8> {
    key(WAITING_PLACE, &[delivery.as_bytes()])
}

pub(crate) fn dedup(endpoint: EndpointId, dedup_key: &str) -> Vec<u8> {
    key(DEDUP, &[endpoint.as_bytes(), dedup_key.as_bytes()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_keys_sort_by_endpoint_then_time_and_round_trip() {
        let (a, b) = (EndpointId::new(), EndpointId::new());
        let d = DeliveryId::new();
        let mut keys = [due(b, 1, d), due(a, 300, d), due(a, 2, d), due(a, 256, d)];
        keys.sort();
        let parsed: Vec<_> = keys.iter().map(|k| parse_due(k).unwrap()).collect();
        let mut expected = vec![(a, 2, d), (a, 256, d), (a, 300, d), (b, 1, d)];
        if b < a {
            expected.rotate_left(3);
        }
        assert_eq!(parsed, expected);
        assert_eq!(parse_due(b"Qshort"), None);
    }
}
