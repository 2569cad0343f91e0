//! Callback URL checks and log-safe URL rendering.

use url::Url;

use crate::policy::UrlRules;

/// Longest callback URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// Parses a callback URL and checks it against a policy's rules. The error says why, without
/// repeating any credentials the URL carried.
pub fn check_url(raw: &str, rules: &UrlRules) -> Result<Url, String> {
    if raw.len() > MAX_URL_LEN {
        return Err(format!("URL is longer than {MAX_URL_LEN} characters"));
    }
    let url = Url::parse(raw).map_err(|e| format!("not a valid URL: {e}"))?;
    match url.scheme() {
        "https" => {}
        "http" if rules.require_https => {
            return Err("the policy requires https".into());
        }
        "http" => {}
        other => return Err(format!("scheme {other:?} is not http or https")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("URL has no host".into());
    }
    if rules.forbid_userinfo && (!url.username().is_empty() || url.password().is_some()) {
        return Err("the policy forbids credentials (userinfo before @) in callback URLs".into());
    }
    Ok(url)
}

/// `scheme://host[:port]/path` without credentials, query or fragment: safe to log. Paths are
/// kept because they identify the integration; tokens belong in queries, which are dropped.
pub fn redact(url: &str) -> String {
    match Url::parse(url) {
        Ok(url) => {
            let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!(
                "{}://{}{}{}",
                url.scheme(),
                url.host_str().unwrap_or(""),
                port,
                url.path()
            )
        }
        Err(_) => "<invalid url>".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_rules_table() {
        let open = UrlRules::default();
        let gengo = UrlRules {
            forbid_userinfo: true,
            require_https: false,
        };
        let strict = UrlRules {
            forbid_userinfo: true,
            require_https: true,
        };
        let long = format!("https://a.example/{}", "x".repeat(MAX_URL_LEN));
        let table: &[(&str, &UrlRules, bool)] = &[
            ("https://tms.example/cb", &open, true),
            ("http://tms.example/cb?token=abc", &open, true),
            ("https://user:s3cret@tms.example/cb", &open, true),
            ("https://user:s3cret@tms.example/cb", &gengo, false),
            ("https://user@tms.example/cb", &gengo, false),
            ("http://tms.example/cb", &strict, false),
            ("https://tms.example/cb", &strict, true),
            ("ftp://tms.example/cb", &open, false),
            ("file:///etc/passwd", &open, false),
            ("javascript:alert(1)", &open, false),
            ("tms.example/cb", &open, false),
            ("https://", &open, false),
            ("", &open, false),
            (long.as_str(), &open, false),
        ];
        for (url, rules, ok) in table {
            let result = check_url(url, rules);
            assert_eq!(result.is_ok(), *ok, "{url}: {result:?}");
            if let Err(reason) = result {
                assert!(!reason.contains("s3cret"), "{reason}");
            }
        }
    }

    #[test]
    fn redaction_drops_credentials_and_queries() {
        assert_eq!(
            redact("https://u:secret@tms.example:8443/cb/x?token=abc#f"),
            "https://tms.example:8443/cb/x"
        );
        assert_eq!(redact("nonsense"), "<invalid url>");
    }
}
