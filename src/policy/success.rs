//! Classifying a receiver's answer: success, a failure worth retrying, or "gone".
//!
//! Transport errors (timeouts, refused connections) never reach this module; the engine treats
//! them as retryable failures on its own.

use serde_json::Value;

use super::Policy;

/// What a response means under a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Delivered; stop.
    Success,
    /// Not delivered; retry if the schedule has attempts left. The string says why.
    Failure(String),
    /// HTTP 410 under a policy with `disable_on_gone`: stop and disable the endpoint.
    Gone,
}

/// Classifies a response by its status and (bounded) body.
pub fn classify(policy: &Policy, status: u16, body: &[u8]) -> Verdict {
    if status == 410 && policy.endpoint.disable_on_gone {
        return Verdict::Gone;
    }
    let rule = &policy.success;
    let status_ok = if rule.status.is_empty() {
        (200..300).contains(&status)
    } else {
        rule.status.contains(&status)
    };
    if !status_ok {
        return Verdict::Failure(format!("status {status} is not a success"));
    }
    let Some(pattern) = &rule.body_json else {
        return Verdict::Success;
    };
    match serde_json::from_slice::<Value>(body) {
        Ok(actual) if json_contains(&actual, pattern) => Verdict::Success,
        Ok(_) => Verdict::Failure(format!("response body does not contain {pattern}")),
        Err(_) => Verdict::Failure("response body is not JSON".into()),
    }
}

/// True when `actual` contains `pattern`: objects recursively by key, everything else by
/// equality. `{"success": true, "x": 1}` contains `{"success": true}`.
pub fn json_contains(actual: &Value, pattern: &Value) -> bool {
    match (actual, pattern) {
        (Value::Object(actual), Value::Object(pattern)) => pattern.iter().all(|(key, want)| {
            actual
                .get(key)
                .is_some_and(|have| json_contains(have, want))
        }),
        _ => actual == pattern,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{EndpointRules, SuccessRule};
    use serde_json::json;

    fn policy(success: SuccessRule, disable_on_gone: bool) -> Policy {
        let mut p = Policy::from_toml(
            "t",
            "name = \"t\"\n[schedule]\nkind = \"fixed\"\ninterval = \"1s\"\nmax_attempts = 1\n",
        )
        .unwrap();
        p.success = success;
        p.endpoint = EndpointRules {
            deactivate_after: 0,
            disable_on_gone,
            rate_limit: None,
        };
        p
    }

    #[test]
    fn classification_table() {
        let any_2xx = policy(SuccessRule::default(), false);
        let only_200 = policy(
            SuccessRule {
                status: vec![200],
                body_json: None,
            },
            false,
        );
        let ovesio = policy(
            SuccessRule {
                status: vec![200],
                body_json: Some(json!({"success": true})),
            },
            false,
        );
        let gone = policy(SuccessRule::default(), true);
        let ok = Verdict::Success;
        let table: &[(&Policy, u16, &str, bool)] = &[
            (&any_2xx, 200, "", true),
            (&any_2xx, 204, "", true),
            (&any_2xx, 299, "", true),
            (&any_2xx, 300, "", false),
            (&any_2xx, 500, "", false),
            (&any_2xx, 410, "", false),
            (&only_200, 200, "", true),
            (&only_200, 201, "", false),
            (&ovesio, 200, r#"{"success": true}"#, true),
            (&ovesio, 200, r#"{"success": true, "id": 7}"#, true),
            (&ovesio, 200, r#"{"success": false}"#, false),
            (&ovesio, 200, r#"{"success": "true"}"#, false),
            (&ovesio, 200, r#"{}"#, false),
            (&ovesio, 200, "OK", false),
            (&ovesio, 200, "", false),
            (&ovesio, 500, r#"{"success": true}"#, false),
            (&ovesio, 201, r#"{"success": true}"#, false),
        ];
        for (policy, status, body, success) in table {
            let verdict = classify(policy, *status, body.as_bytes());
            assert_eq!(verdict == ok, *success, "{status} {body:?}: {verdict:?}");
        }
        assert_eq!(classify(&gone, 410, b""), Verdict::Gone);
        assert_eq!(classify(&gone, 200, b""), Verdict::Success);
    }

    #[test]
    fn containment_is_recursive_for_objects_only() {
        let actual = json!({"a": {"b": 1, "c": [1, 2]}, "d": null});
        assert!(json_contains(&actual, &json!({"a": {"b": 1}})));
        assert!(json_contains(&actual, &json!({"d": null})));
        assert!(json_contains(&actual, &json!({"a": {"c": [1, 2]}})));
        assert!(!json_contains(&actual, &json!({"a": {"c": [1]}})));
        assert!(!json_contains(&actual, &json!({"e": null})));
        assert!(json_contains(&actual, &json!({})));
    }
}
