//! Signing schemes: the headers that let a receiver authenticate a request.
//!
//! Signatures are computed over the exact body bytes sent, at send time (a retry hours later
//! gets a fresh Standard Webhooks timestamp).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};

use crate::policy::{HmacAlgorithm, SignatureEncoding, Signing};

/// What a signature needs to know about the request being signed.
pub struct SignInput<'a> {
    /// The message id (Standard Webhooks `webhook-id`).
    pub message_id: &'a str,
    /// Unix seconds at send time.
    pub timestamp: u64,
    /// The exact request body.
    pub body: &'a [u8],
    /// Current secret first, then any rotated secret still in its grace period.
    pub secrets: &'a [&'a str],
    /// The endpoint's token, for token schemes.
    pub token: Option<&'a str>,
}

/// Why a request could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The scheme needs a secret and the endpoint has none.
    #[error("the policy signs requests but the endpoint has no secret")]
    MissingSecret,
    /// The scheme needs a token and the endpoint has none.
    #[error("the policy sends a token but the endpoint has no token")]
    MissingToken,
    /// A Standard Webhooks secret is not `whsec_` + base64.
    #[error("a standard-webhooks secret must be \"whsec_\" followed by base64")]
    BadSecret,
}

/// The signature headers for one request, as (name, value) pairs.
pub fn sign(scheme: &Signing, input: &SignInput<'_>) -> Result<Vec<(String, String)>, SignError> {
    match scheme {
        Signing::None {} => Ok(Vec::new()),
        Signing::Token { header } => {
            let token = input.token.ok_or(SignError::MissingToken)?;
            Ok(vec![(header.clone(), token.to_string())])
        }
        Signing::Hmac {
            algorithm,
            header,
            encoding,
        } => {
            let secret = input.secrets.first().ok_or(SignError::MissingSecret)?;
            let mac = hmac(*algorithm, secret.as_bytes(), &[input.body]);
            let value = match encoding {
                SignatureEncoding::Hex => hex::encode(mac),
                SignatureEncoding::Base64 => BASE64.encode(mac),
            };
            Ok(vec![(header.clone(), value)])
        }
        Signing::StandardWebhooks {} => {
            if input.secrets.is_empty() {
                return Err(SignError::MissingSecret);
            }
            let timestamp = input.timestamp.to_string();
            let mut signatures = Vec::with_capacity(input.secrets.len());
            for secret in input.secrets {
                let key = standard_webhooks_key(secret)?;
                let mac = hmac(
                    HmacAlgorithm::Sha256,
                    &key,
                    &[
                        input.message_id.as_bytes(),
                        b".",
                        timestamp.as_bytes(),
                        b".",
                        input.body,
                    ],
                );
                signatures.push(format!("v1,{}", BASE64.encode(mac)));
            }
            Ok(vec![
                ("webhook-id".into(), input.message_id.to_string()),
                ("webhook-timestamp".into(), timestamp),
                ("webhook-signature".into(), signatures.join(" ")),
            ])
        }
    }
}

/// The key bytes of a `whsec_<base64>` secret.
pub fn standard_webhooks_key(secret: &str) -> Result<Vec<u8>, SignError> {
    let encoded = secret.strip_prefix("whsec_").ok_or(SignError::BadSecret)?;
    BASE64.decode(encoded).map_err(|_| SignError::BadSecret)
}

fn hmac(algorithm: HmacAlgorithm, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    fn run<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        // HMAC takes keys of any length, so this cannot fail.
        let Ok(mut mac) = <M as KeyInit>::new_from_slice(key) else {
            unreachable!("HMAC accepts every key length")
        };
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().to_vec()
    }
    match algorithm {
        HmacAlgorithm::Sha1 => run::<Hmac<sha1::Sha1>>(key, parts),
        HmacAlgorithm::Sha256 => run::<Hmac<sha2::Sha256>>(key, parts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(body: &'a [u8], secrets: &'a [&'a str]) -> SignInput<'a> {
        SignInput {
            message_id: "msg_p5jXN8AQM9LWM0D4loKWxJek",
            timestamp: 1614265330,
            body,
            secrets,
            token: Some("tok"),
        }
    }

    #[test]
    fn hmac_sha1_hex_matches_an_independent_vector() {
        // printf '%s' '{"id":7}' | openssl dgst -sha1 -hmac 'api-key-123'
        let scheme = Signing::Hmac {
            algorithm: HmacAlgorithm::Sha1,
            header: "X-Tolq-Signature".into(),
            encoding: SignatureEncoding::Hex,
        };
        let headers = sign(&scheme, &input(br#"{"id":7}"#, &["api-key-123"])).unwrap();
        assert_eq!(headers[0].0, "X-Tolq-Signature");
        assert_eq!(headers[0].1, "7543b97f0ba4ca8ded25cd3cd95bbefc8684991d");
    }

    #[test]
    fn standard_webhooks_matches_the_specification_example() {
        // The example from the Standard Webhooks specification.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        let headers = sign(&Signing::StandardWebhooks {}, &input(body, &[secret])).unwrap();
        assert_eq!(
            headers[0],
            ("webhook-id".into(), "msg_p5jXN8AQM9LWM0D4loKWxJek".into())
        );
        assert_eq!(
            headers[1],
            ("webhook-timestamp".into(), "1614265330".into())
        );
        assert_eq!(
            headers[2].1,
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn rotation_signs_with_every_valid_secret() {
        let old = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let new = "whsec_c2VjcmV0LXR3by1ieXRlcy1mb3ItdGVzdGluZw==";
        let body = br#"{"test": 2432232314}"#;
        let headers = sign(&Signing::StandardWebhooks {}, &input(body, &[new, old])).unwrap();
        let signatures: Vec<&str> = headers[2].1.split(' ').collect();
        assert_eq!(signatures.len(), 2);
        assert_eq!(
            signatures[1],
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert_ne!(signatures[0], signatures[1]);
    }

    #[test]
    fn missing_material_is_an_error() {
        let token = Signing::Token {
            header: "x-memsource-token".into(),
        };
        let mut no_token = input(b"{}", &[]);
        no_token.token = None;
        assert_eq!(sign(&token, &no_token), Err(SignError::MissingToken));
        assert_eq!(
            sign(&Signing::StandardWebhooks {}, &input(b"{}", &[])),
            Err(SignError::MissingSecret)
        );
        assert_eq!(
            sign(&Signing::StandardWebhooks {}, &input(b"{}", &["plain"])),
            Err(SignError::BadSecret)
        );
        assert_eq!(
            sign(&token, &input(b"{}", &[])).unwrap(),
            vec![("x-memsource-token".to_string(), "tok".to_string())]
        );
    }
}
