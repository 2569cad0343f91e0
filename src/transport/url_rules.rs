//! Callback URL checks and log-safe URL rendering.

use std::cell::RefCell;
use std::collections::HashMap;
use std::thread::LocalKey;

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
    let url = Url::parse(raw).map_err(|e| match e {
        url::ParseError::RelativeUrlWithoutBase => {
            "not an absolute URL: a callback URL starts with http:// or https://".to_string()
        }
        e => format!("not a valid URL: {e}"),
    })?;
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
    thread_local! {
        static REDACTED: RefCell<HashMap<String, String>> = RefCell::default();
    }
    memo(&REDACTED, url, redact_now)
}

/// [`redact`], for text that is a URL with a host; `None` otherwise: what does not parse, or
/// has no host (`user:pw@x.example` parses with the scheme `user`), might be credentials, so
/// an error about it does not repeat it.
pub fn redact_with_host(url: &str) -> Option<String> {
    Url::parse(url)
        .ok()
        .filter(|parsed| parsed.host().is_some())
        .map(|_| redact(url))
}

/// A URL parsed, as the client sends to it. Memoized like [`redact`].
pub(crate) fn parse_target(url: &str) -> Result<Url, url::ParseError> {
    thread_local! {
        static PARSED: RefCell<HashMap<String, Result<Url, url::ParseError>>> = RefCell::default();
    }
    memo(&PARSED, url, Url::parse)
}

/// URLs kept per thread by [`memo`]: the few a thread meets most (one per endpoint, or per
/// override) repeat for every message and attempt, and parsing one costs more than hashing it.
const MEMO_URLS: usize = 256;

/// `f(url)`, from this thread's memo when `url` was met before; the memo is emptied when full.
fn memo<T: Clone + 'static>(
    cache: &'static LocalKey<RefCell<HashMap<String, T>>>,
    url: &str,
    f: impl FnOnce(&str) -> T,
) -> T {
    cache.with_borrow_mut(|known| {
        if let Some(value) = known.get(url) {
            return value.clone();
        }
        let value = f(url);
        if known.len() >= MEMO_URLS {
            known.clear();
        }
        known.insert(url.to_owned(), value.clone());
        value
    })
}

fn redact_now(url: &str) -> String {
    match Url::parse(url) {
        // No host (`user:pw@x.example` parses with the scheme `user`): all that follows the
        // scheme might be the credentials.
        Ok(url) if url.host_str().is_none() => format!("{}:", url.scheme()),
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
    fn memoized_answers_are_the_answers() {
        let urls = (0..MEMO_URLS * 2 + 3).map(|i| format!("https://u:p@h{i}.example/p?t={i}"));
        for url in urls.chain(["not a url".to_string()]) {
            for _ in 0..2 {
                assert_eq!(redact(&url), redact_now(&url));
                assert_eq!(parse_target(&url), Url::parse(&url));
            }
        }
    }

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
        assert_eq!(redact("user:secret@tms.example"), "user:");
    }
}
