//! How records are written as bytes, in every backend: a version byte, then postcard; records
//! that carry secrets sealed with the store's key.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::seal::Sealer;
use super::{StoreError, StoreResult};

/// Version byte in front of every stored record, so a later layout can be told apart.
pub(crate) const RECORD_V1: u8 = 1;
/// A sealed record: this byte, then [`Sealer::seal`] of a `RECORD_V1` record.
pub(crate) const RECORD_SEALED: u8 = 2;

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
    let sealed = sealer.seal(&encode(value)?).map_err(StoreError::Backend)?;
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
