//! How records are written into sled values: a version byte, then postcard; messages as a
//! header followed by the payload verbatim; endpoint records and callback URLs sealed.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::model::{DeliveryId, Message, MessageId};
use crate::store::codec::{RECORD_V1, encode_as};
pub(super) use crate::store::codec::{
    corrupt, decode, encode, open, open_endpoint, seal, seal_endpoint,
};
use crate::store::seal::Sealer;
use crate::store::{StoreError, StoreResult};

/// A message header whose callback URL is sealed and which carries an ordering key.
const MESSAGE_V2: u8 = 3;
/// A message header that also carries the `traceparent` of the span that accepted it.
const MESSAGE_V3: u8 = 4;
/// A [`MESSAGE_V3`] header followed by the message's delivery ids, which records of the
/// earlier versions list under `m` keys instead (one key range more written per message).
const MESSAGE_V4: u8 = 5;

/// A message as first stored: everything but the payload, the callback URL in clear.
#[derive(Deserialize)]
struct MessageHeaderV1 {
    id: MessageId,
    tenant: String,
    event_type: String,
    callback_url: Option<String>,
    idempotency_key: Option<String>,
    dedup_key: Option<String>,
    created_at: u64,
}

/// A message as stored before trace contexts: the callback URL sealed (it may carry
/// credentials or a token in its query), and the ordering key.
#[derive(Deserialize)]
struct MessageHeaderV2 {
    id: MessageId,
    tenant: String,
    event_type: String,
    callback_url: Option<Vec<u8>>,
    idempotency_key: Option<String>,
    dedup_key: Option<String>,
    ordering_key: Option<String>,
    created_at: u64,
}

/// A message as stored now: [`MessageHeaderV2`] and the accepting span's `traceparent`.
#[derive(Serialize, Deserialize)]
struct MessageHeader {
    id: MessageId,
    tenant: String,
    event_type: String,
    callback_url: Option<Vec<u8>>,
    idempotency_key: Option<String>,
    dedup_key: Option<String>,
    ordering_key: Option<String>,
    traceparent: Option<String>,
    created_at: u64,
}

/// `header length (u32 BE) || header || payload`: the payload is kept byte for byte and is
/// not copied through a serializer.
/// `deliveries`: the ids the record lists ([`MESSAGE_V4`]); `None`: it lists none
/// ([`MESSAGE_V3`]), and the caller writes an `m` key for each delivery instead.
pub(super) fn encode_message(
    sealer: &Sealer,
    message: &Message,
    deliveries: Option<&[DeliveryId]>,
) -> StoreResult<Vec<u8>> {
    let callback_url = match &message.callback_url {
        Some(url) => Some(sealer.seal(url.as_bytes()).map_err(StoreError::Backend)?),
        None => None,
    };
    let header = MessageHeader {
        id: message.id,
        tenant: message.tenant.clone(),
        event_type: message.event_type.clone(),
        callback_url,
        idempotency_key: message.idempotency_key.clone(),
        dedup_key: message.dedup_key.clone(),
        ordering_key: message.ordering_key.clone(),
        traceparent: message.traceparent.clone(),
        created_at: message.created_at,
    };
    let header = match deliveries {
        Some(ids) => encode_as(MESSAGE_V4, &(header, ids))?,
        None => encode_as(MESSAGE_V3, &header)?,
    };
    let payload = message.payload.get().as_bytes();
    let mut out = Vec::with_capacity(4 + header.len() + payload.len());
    out.extend_from_slice(&(header.len() as u32).to_be_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
    Ok(out)
}

/// The header of a stored message, and where its payload starts.
fn split_message<'a>(key: &[u8], bytes: &'a [u8]) -> StoreResult<(&'a [u8], usize)> {
    let len = bytes
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| corrupt(key, "short record"))? as usize;
    let header = bytes
        .get(4..4 + len)
        .ok_or_else(|| corrupt(key, "short header"))?;
    Ok((header, 4 + len))
}

/// The delivery ids a stored message lists, without opening its sealed parts; `None` for a
/// record that does not list them (its deliveries have `m` keys): one of a version before
/// [`MESSAGE_V4`], or of a message with more deliveries than a record lists.
pub(super) fn message_deliveries(key: &[u8], bytes: &[u8]) -> StoreResult<Option<Vec<DeliveryId>>> {
    match split_message(key, bytes)?.0.split_first() {
        Some((&version @ (MESSAGE_V3 | MESSAGE_V4), record)) => {
            Ok(current_header(key, version, record)?.1)
        }
        Some((&(RECORD_V1 | MESSAGE_V2), _)) => Ok(None),
        Some((version, _)) => Err(corrupt(key, format!("unknown record version {version}"))),
        None => Err(corrupt(key, "empty header")),
    }
}

/// A header of the current layout, and the delivery ids a [`MESSAGE_V4`] one lists after it.
/// Read to its last byte, so that `store check` finds a damaged list and a record whose
/// version byte was damaged does not pass for the other version.
fn current_header(
    key: &[u8],
    version: u8,
    record: &[u8],
) -> StoreResult<(MessageHeader, Option<Vec<DeliveryId>>)> {
    let bad = |e: postcard::Error| corrupt(key, e.to_string());
    let (header, rest) = postcard::take_from_bytes::<MessageHeader>(record).map_err(bad)?;
    let (ids, rest) = match version {
        MESSAGE_V4 => {
            let (ids, rest) = postcard::take_from_bytes::<Vec<DeliveryId>>(rest).map_err(bad)?;
            (Some(ids), rest)
        }
        _ => (None, rest),
    };
    if !rest.is_empty() {
        return Err(corrupt(key, "bytes after the message header"));
    }
    Ok((header, ids))
}

pub(super) fn decode_message(sealer: &Sealer, key: &[u8], bytes: &[u8]) -> StoreResult<Message> {
    let (header, payload_at) = split_message(key, bytes)?;
    let payload =
        std::str::from_utf8(&bytes[payload_at..]).map_err(|_| corrupt(key, "payload utf-8"))?;
    let payload =
        RawValue::from_string(payload.to_string()).map_err(|_| corrupt(key, "payload json"))?;
    let open_url = |sealed: Option<Vec<u8>>| match sealed {
        Some(sealed) => {
            let plain = sealer
                .open(&sealed)
                .map_err(|reason| corrupt(key, reason))?;
            String::from_utf8(plain)
                .map(Some)
                .map_err(|_| corrupt(key, "callback url"))
        }
        None => Ok(None),
    };
    let header = match header.split_first() {
        Some((&version @ (MESSAGE_V3 | MESSAGE_V4), record)) => {
            let (h, _) = current_header(key, version, record)?;
            Message {
                id: h.id,
                tenant: h.tenant,
                event_type: h.event_type,
                payload: RawValue::NULL.to_owned(),
                callback_url: open_url(h.callback_url)?,
                idempotency_key: h.idempotency_key,
                dedup_key: h.dedup_key,
                ordering_key: h.ordering_key,
                traceparent: h.traceparent,
                created_at: h.created_at,
            }
        }
        Some((&MESSAGE_V2, record)) => {
            let h: MessageHeaderV2 =
                postcard::from_bytes(record).map_err(|e| corrupt(key, e.to_string()))?;
            MessageHeaderV1 {
                id: h.id,
                tenant: h.tenant,
                event_type: h.event_type,
                callback_url: open_url(h.callback_url)?,
                idempotency_key: h.idempotency_key,
                dedup_key: h.dedup_key,
                created_at: h.created_at,
            }
            .with_ordering_key(h.ordering_key)
        }
        _ => decode::<MessageHeaderV1>(key, header)?.with_ordering_key(None),
    };
    Ok(Message { payload, ..header })
}

impl MessageHeaderV1 {
    /// The message without its payload (filled in by the caller).
    fn with_ordering_key(self, ordering_key: Option<String>) -> Message {
        Message {
            id: self.id,
            tenant: self.tenant,
            event_type: self.event_type,
            payload: RawValue::NULL.to_owned(),
            callback_url: self.callback_url,
            idempotency_key: self.idempotency_key,
            dedup_key: self.dedup_key,
            ordering_key,
            traceparent: None,
            created_at: self.created_at,
        }
    }
}

/// An endpoint's health as stored under its `F` key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Health {
    pub(super) failures: u32,
    pub(super) disabled_reason: Option<String>,
    pub(super) disabled_at: Option<u64>,
    pub(super) released_at: Option<u64>,
}

impl Health {
    /// The first layout was the failure count alone, a 4-byte big-endian number; every
    /// record since is longer.
    pub(super) fn decode(key: &[u8], bytes: &[u8]) -> StoreResult<Health> {
        match <[u8; 4]>::try_from(bytes) {
            Ok(count) => Ok(Health {
                failures: u32::from_be_bytes(count),
                ..Health::default()
            }),
            Err(_) => decode(key, bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::KEY_BYTES;

    fn sample() -> Message {
        Message {
            id: MessageId::new(),
            tenant: "acme".into(),
            event_type: "job.completed".into(),
            payload: RawValue::from_string(r#"{"job_id": 7}"#.into()).unwrap(),
            callback_url: Some("https://u:p@tms.example/cb?token=s3cret".into()),
            idempotency_key: Some("k".into()),
            dedup_key: None,
            ordering_key: Some("job-7".into()),
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            created_at: 42,
        }
    }

    #[test]
    fn messages_round_trip_with_the_callback_url_sealed() {
        let sealer = Sealer::new(&[3; KEY_BYTES]);
        let message = sample();
        let deliveries = [DeliveryId::new(), DeliveryId::new()];
        let bytes = encode_message(&sealer, &message, Some(&deliveries)).unwrap();
        assert!(!bytes.windows(6).any(|w| w == b"s3cret"));
        let listed = message_deliveries(b"M", &bytes).unwrap();
        assert_eq!(listed.as_deref(), Some(&deliveries[..]));
        let back = decode_message(&sealer, b"M", &bytes).unwrap();
        assert_eq!(back.payload.get(), r#"{"job_id": 7}"#);
        assert_eq!(back.callback_url, message.callback_url);
        assert_eq!(back.ordering_key.as_deref(), Some("job-7"));
        assert_eq!(back.traceparent, message.traceparent);
        assert_eq!(back.created_at, 42);
    }

    #[test]
    fn a_message_that_lists_no_deliveries_still_decodes() {
        let sealer = Sealer::new(&[3; KEY_BYTES]);
        let bytes = encode_message(&sealer, &sample(), None).unwrap();
        assert_eq!(message_deliveries(b"M", &bytes).unwrap(), None);
        let back = decode_message(&sealer, b"M", &bytes).unwrap();
        assert_eq!(back.ordering_key.as_deref(), Some("job-7"));
        assert_eq!(back.payload.get(), r#"{"job_id": 7}"#);
    }

    #[test]
    fn a_damaged_delivery_list_or_version_byte_is_found() {
        let sealer = Sealer::new(&[3; KEY_BYTES]);
        let bytes = encode_message(&sealer, &sample(), Some(&[DeliveryId::new()])).unwrap();
        let (header, payload_at) = split_message(b"M", &bytes).unwrap();
        let with_header = |header: &[u8]| {
            let mut out = (header.len() as u32).to_be_bytes().to_vec();
            out.extend_from_slice(header);
            out.extend_from_slice(&bytes[payload_at..]);
            out
        };
        let cut = with_header(&header[..header.len() - 1]);
        let mut relabelled = header.to_vec();
        relabelled[0] = MESSAGE_V3;
        let relabelled = with_header(&relabelled);
        let mut unknown = header.to_vec();
        unknown[0] = 9;
        let unknown = with_header(&unknown);
        for damaged in [cut, relabelled, unknown] {
            assert!(decode_message(&sealer, b"M", &damaged).is_err());
            assert!(message_deliveries(b"M", &damaged).is_err());
        }
    }

    #[test]
    fn health_reads_the_first_layout() {
        let old = 7u32.to_be_bytes();
        assert_eq!(Health::decode(b"F", &old).unwrap().failures, 7);
        let new = Health {
            failures: 3,
            disabled_reason: Some("5 failures".into()),
            disabled_at: Some(1),
            released_at: None,
        };
        let bytes = encode(&new).unwrap();
        assert_ne!(bytes.len(), 4);
        assert_eq!(Health::decode(b"F", &bytes).unwrap(), new);
    }
}
