//! Request bodies: a payload encoded the way a policy says.
//!
//! Pure code: used when a message is accepted (to check the size limit on the bytes that will
//! really be sent) and again at send time (to produce them).

use crate::policy::{Encoding, RequestSpec};

/// `Content-Type` of JSON bodies.
pub const JSON: &str = "application/json";
/// `Content-Type` of form bodies.
pub const FORM: &str = "application/x-www-form-urlencoded";

/// An encoded request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    /// Its media type.
    pub content_type: &'static str,
    /// The exact bytes sent and signed.
    pub bytes: Vec<u8>,
}

/// Encodes a JSON payload: as is for `json`, or inside one form field for `form`.
pub fn encode(spec: &RequestSpec, event_type: &str, payload_json: &str) -> Body {
    match spec.encoding {
        Encoding::Json => Body {
            content_type: JSON,
            bytes: payload_json.as_bytes().to_vec(),
        },
        Encoding::Form => {
            let field = spec.form_field_for(event_type);
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair(field, payload_json);
            Body {
                content_type: FORM,
                bytes: form.finish().into_bytes(),
            }
        }
    }
}

/// The length of [`encode`]'s bytes, without copying a JSON payload to measure it.
pub fn encoded_len(spec: &RequestSpec, event_type: &str, payload_json: &str) -> usize {
    match spec.encoding {
        Encoding::Json => payload_json.len(),
        Encoding::Form => encode(spec, event_type, payload_json).bytes.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_bodies_round_trip_through_a_standard_parser() {
        let mut spec = RequestSpec {
            encoding: Encoding::Form,
            form_field: "job".into(),
            ..RequestSpec::default()
        };
        spec.form_field_by_event_prefix
            .insert("comment".into(), "comment".into());
        let payload = r#"{"body":"a & b = c? 100% ünïcode +","n":[1,2]}"#;
        for (event, field) in [("job.available", "job"), ("comment.added", "comment")] {
            let body = encode(&spec, event, payload);
            assert_eq!(body.content_type, FORM);
            let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&body.bytes).unwrap();
            assert_eq!(pairs, vec![(field.to_string(), payload.to_string())]);
        }
    }

    #[test]
    fn json_bodies_are_the_payload_bytes() {
        let body = encode(&RequestSpec::default(), "x", r#"{ "a" : 1 }"#);
        assert_eq!(
            (body.content_type, body.bytes.as_slice()),
            (JSON, &br#"{ "a" : 1 }"#[..])
        );
    }
}
