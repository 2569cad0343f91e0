//! How records are written as bytes, in every backend: a version byte, then postcard; records
//! that carry secrets sealed with the store's key.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::seal::Sealer;
use super::{StoreError, StoreResult};
use crate::model::{Endpoint, EndpointId, RotatedSecret};

/// Version byte in front of every stored record, so a later layout can be told apart.
pub(crate) const RECORD_V1: u8 = 1;
/// A sealed record: this byte, then [`Sealer::seal`] of a `RECORD_V1` record.
pub(crate) const RECORD_SEALED: u8 = 2;
/// An endpoint record with a rate limit (sealed like every endpoint record). (3 and 4 are
/// message headers, see the sled backend's codec.)
const ENDPOINT_V2: u8 = 5;

/// Records are stored as postcard: a delivery is ~100 bytes instead of ~450 as JSON, and sled's
/// write volume (its log and its page rewrites) grows with record size. Measured: JSON records
/// made sled's log writer the largest CPU cost of delivering.
pub(crate) fn encode<T: Serialize>(value: &T) -> StoreResult<Vec<u8>> {
    encode_as(RECORD_V1, value)
}

pub(crate) fn encode_as<T: Serialize>(version: u8, value: &T) -> StoreResult<Vec<u8>> {
    let mut out = vec![version];
    postcard::to_io(value, &mut out).map_err(|e| StoreError::Backend(format!("encode: {e}")))?;
    Ok(out)
}

pub(crate) fn corrupt(key: &[u8], reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        key: printable(key),
        reason: reason.into(),
    }
}

/// A key for people: the prefix letter, then hex.
pub(crate) fn printable(key: &[u8]) -> String {
    match key.split_first() {
        Some((prefix, rest)) => format!("{}:{}", char::from(*prefix), hex::encode(rest)),
        None => String::new(),
    }
}

pub(crate) fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> StoreResult<T> {
    match bytes.split_first() {
        Some((&RECORD_V1, record)) => {
            postcard::from_bytes(record).map_err(|e| corrupt(key, e.to_string()))
        }
        Some((version, _)) => Err(corrupt(key, format!("unknown record version {version}"))),
        None => Err(corrupt(key, "empty record")),
    }
}

/// Seals a record that carries secrets (endpoint secrets, tokens, credentials in URLs).
pub(crate) fn seal<T: Serialize>(sealer: &Sealer, value: &T) -> StoreResult<Vec<u8>> {
    seal_plain(sealer, &encode(value)?)
}

fn seal_plain(sealer: &Sealer, plain: &[u8]) -> StoreResult<Vec<u8>> {
    let sealed = sealer.seal(plain).map_err(StoreError::Backend)?;
    let mut out = Vec::with_capacity(1 + sealed.len());
    out.push(RECORD_SEALED);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Opens a sealed record (or reads a plain one written before records were sealed).
pub(crate) fn open<T: DeserializeOwned>(
    sealer: &Sealer,
    key: &[u8],
    bytes: &[u8],
) -> StoreResult<T> {
    match bytes.split_first() {
        Some((&RECORD_SEALED, sealed)) => {
            let plain = sealer.open(sealed).map_err(|reason| corrupt(key, reason))?;
            decode(key, &plain)
        }
        _ => decode(key, bytes),
    }
}

/// Seals an endpoint record in its current layout (with a rate limit).
pub(crate) fn seal_endpoint(sealer: &Sealer, endpoint: &Endpoint) -> StoreResult<Vec<u8>> {
    seal_plain(sealer, &encode_as(ENDPOINT_V2, endpoint)?)
}

/// Opens an endpoint record of any layout (sealed or from before records were sealed).
pub(crate) fn open_endpoint(sealer: &Sealer, key: &[u8], bytes: &[u8]) -> StoreResult<Endpoint> {
    let plain;
    let record = match bytes.split_first() {
        Some((&RECORD_SEALED, sealed)) => {
            plain = sealer.open(sealed).map_err(|reason| corrupt(key, reason))?;
            plain.as_slice()
        }
        _ => bytes,
    };
    match record.split_first() {
        Some((&ENDPOINT_V2, endpoint)) => {
            postcard::from_bytes(endpoint).map_err(|e| corrupt(key, e.to_string()))
        }
        _ => decode::<EndpointV1>(key, record).map(Endpoint::from),
    }
}

/// An endpoint record as stored before rate limits.
#[derive(Deserialize)]
struct EndpointV1 {
    id: EndpointId,
    tenant: String,
    url: String,
    policy: String,
    secret: Option<String>,
    previous_secret: Option<RotatedSecret>,
    token: Option<String>,
    headers: BTreeMap<String, String>,
    event_types: Vec<String>,
    default: bool,
    enabled: bool,
    created_at: u64,
    updated_at: u64,
}

impl From<EndpointV1> for Endpoint {
    fn from(e: EndpointV1) -> Endpoint {
        Endpoint {
            id: e.id,
            tenant: e.tenant,
            url: e.url,
            policy: e.policy,
            secret: e.secret,
            previous_secret: e.previous_secret,
            token: e.token,
            headers: e.headers,
            event_types: e.event_types,
            default: e.default,
            enabled: e.enabled,
            consecutive_failures: 0,
            disabled_reason: None,
            disabled_at: None,
            released_at: None,
            created_at: e.created_at,
            updated_at: e.updated_at,
            rate_limit: None,
        }
    }
}
