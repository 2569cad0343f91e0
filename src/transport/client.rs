//! The HTTP client: one pooled reqwest client, no redirects, bounded response reads.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};

use super::Body;
use super::guard::{ForbiddenTarget, GuardedResolver, TargetPolicy, check_literal};
use crate::model::ErrorKind;

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Route every request through this HTTP(S) proxy (one egress IP for allow-lists).
    pub proxy: Option<String>,
    /// Hosts reached directly even with a proxy: comma-separated names (a leading `.` or
    /// `*.` matches subdomains), IPs and CIDRs, as in the `NO_PROXY` convention.
    pub no_proxy: Option<String>,
    /// Response bytes read at most (enough for a `body_json` success rule).
    pub max_response_bytes: usize,
    /// Idle connections kept per host. Many endpoints often share one host (a TMS's own
    /// callback host), so this matches the default global in-flight cap: fewer would make
    /// attempts beyond it open a new connection each.
    pub pool_idle_per_host: usize,
    /// Which addresses may be contacted (the SSRF guard; private ranges refused by default).
    pub targets: TargetPolicy,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            proxy: None,
            no_proxy: None,
            max_response_bytes: 64 * 1024,
            pool_idle_per_host: 1024,
            targets: TargetPolicy::default(),
        }
    }
}

/// One request to send.
pub struct Request<'a> {
    /// Target.
    pub url: &'a str,
    /// Extra headers (signatures, herald ids, the endpoint's own).
    pub headers: &'a [(String, String)],
    /// Encoded body.
    pub body: Body,
    /// Whole-exchange limit.
    pub timeout: Duration,
}

/// A response, read up to the cap.
#[derive(Debug, Clone)]
pub struct ResponseSummary {
    /// Status code.
    pub status: u16,
    /// The first `max_response_bytes` of the body.
    pub body: Vec<u8>,
    /// `Retry-After`, as a duration from now.
    pub retry_after: Option<Duration>,
}

/// What came of one request.
#[derive(Debug, Clone)]
pub enum Exchange {
    /// The receiver answered.
    Response(ResponseSummary),
    /// No usable answer.
    Failed {
        /// Why, coarsely.
        kind: ErrorKind,
        /// Why, for people (never contains the URL).
        detail: String,
    },
}

/// herald's outbound HTTP client.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    max_response_bytes: usize,
    targets: Arc<TargetPolicy>,
}

impl Client {
    /// Builds the client. Fails only on a malformed proxy URL.
    pub fn new(options: &ClientOptions) -> Result<Client, String> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(options.pool_idle_per_host)
            .tcp_nodelay(true)
            .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
            .no_proxy();
        let targets = Arc::new(options.targets.clone());
        let mut resolver = GuardedResolver::new(targets.clone());
        if let Some(proxy) = &options.proxy {
            // Names sent through the proxy are resolved by the proxy, which enforces egress;
            // literals are still checked in `send`. Hosts on the no-proxy list are connected to
            // directly, through the guarded resolver. The proxy itself is the operator's choice
            // and usually sits on a private address, so its own name is not refused.
            let parsed = url::Url::parse(proxy).map_err(|e| format!("proxy: {e}"))?;
            let mut proxy =
                reqwest::Proxy::all(parsed.as_str()).map_err(|e| format!("proxy: {e}"))?;
            if let Some(list) = &options.no_proxy {
                proxy = proxy.no_proxy(reqwest::NoProxy::from_string(list));
            }
            builder = builder.proxy(proxy);
            if let Some(host) = parsed.host_str() {
                resolver = resolver.exempt(host);
            }
        }
        builder = builder.dns_resolver(Arc::new(resolver));
        let http = builder.build().map_err(|e| format!("http client: {e}"))?;
        Ok(Client {
            http,
            max_response_bytes: options.max_response_bytes,
            targets,
        })
    }

    /// Sends one request and reads the answer up to the cap.
    pub async fn send(&self, request: Request<'_>) -> Exchange {
        let url = match super::url_rules::parse_target(request.url) {
            Ok(url) => url,
            Err(e) => {
                return Exchange::Failed {
                    kind: ErrorKind::Refused,
                    detail: format!("invalid URL: {e}"),
                };
            }
        };
        if let Err(refused) = check_literal(&self.targets, &url) {
            return Exchange::Failed {
                kind: ErrorKind::Refused,
                detail: refused.to_string(),
            };
        }
        let mut headers = HeaderMap::with_capacity(request.headers.len() + 1);
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            HeaderValue::from_static(request.body.content_type),
        );
        for (name, value) in request.headers {
            match (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                (Ok(name), Ok(value)) => {
                    headers.append(name, value);
                }
                _ => {
                    return Exchange::Failed {
                        kind: ErrorKind::Refused,
                        detail: format!("header {name:?} is not a valid HTTP header"),
                    };
                }
            }
        }
        let sent = self
            .http
            .post(url)
            .headers(headers)
            .body(request.body.bytes)
            .timeout(request.timeout)
            .send()
            .await;
        let mut response = match sent {
            Ok(response) => response,
            Err(e) => return failure(&e),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = self.max_response_bytes - body.len();
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if body.len() >= self.max_response_bytes {
                        break; // the rest is not needed; the connection is not reused
                    }
                }
                Ok(None) => break,
                Err(e) => return failure(&e),
            }
        }
        Exchange::Response(ResponseSummary {
            status,
            body,
            retry_after,
        })
    }
}

fn failure(e: &reqwest::Error) -> Exchange {
    let chain = error_chain(e);
    // Classified by everything said, at every layer; described by the innermost causes.
    let said = format!("{} {}", e.without_url_ref(), causes(e).join(" ")).to_ascii_lowercase();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(refused) = s.downcast_ref::<ForbiddenTarget>() {
            return Exchange::Failed {
                kind: ErrorKind::Refused,
                detail: refused.to_string(),
            };
        }
        source = s.source();
    }
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else if said.contains("certificate") || said.contains("tls") {
        ErrorKind::Tls
    } else if e.is_connect() {
        ErrorKind::Connect
    } else {
        ErrorKind::Transport
    };
    Exchange::Failed {
        kind,
        detail: chain,
    }
}

/// What went wrong, for the attempt's record: the innermost two causes (`tcp connect error:
/// Connection refused (os error 111)`), or reqwest's own message, without its URL, when it
/// has no cause. The outer layers (`error sending request for url`, `client error
/// (Connect)`) say nothing an operator can act on; the attempt's kind says which step failed.
fn error_chain(e: &reqwest::Error) -> String {
    match causes(e).as_slice() {
        [] => e.without_url_ref(),
        [.., outer, inner] if !outer.contains(inner.as_str()) => format!("{outer}: {inner}"),
        [.., inner] => inner.clone(),
    }
}

/// The error's sources, outermost first.
fn causes(e: &reqwest::Error) -> Vec<String> {
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        causes.push(s.to_string());
        source = s.source();
    }
    causes
}

/// `Retry-After` as seconds or an HTTP date.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

trait WithoutUrl {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_ref(&self) -> String {
        let text = self.to_string();
        match self.url() {
            Some(url) => text
                .replace(&format!(" ({url})"), "")
                .replace(url.as_str(), "<url>"),
            None => text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_connection_is_described_by_its_causes_without_the_url() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/cb?token=secret", closed.local_addr().unwrap());
        drop(closed);
        let e = reqwest::get(&url).await.unwrap_err();
        let detail = error_chain(&e);
        assert!(detail.contains("Connection refused"), "{detail}");
        assert!(matches!(
            failure(&e),
            Exchange::Failed {
                kind: ErrorKind::Connect,
                ..
            }
        ));
        assert!(
            !detail.contains("for url") && !detail.contains("secret"),
            "{detail}"
        );
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3600));
        let parsed = parse_retry_after(&later).unwrap();
        assert!(parsed > Duration::from_secs(3500), "{parsed:?}");
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }
}
