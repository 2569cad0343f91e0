//! `herald receive`: a small receiver that prints every request it gets and checks its
//! signature with herald's own signing code, so what it says is what herald signs.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::IntoResponse;
use clap::Args;
use herald::PolicySet;
use herald::policy::Signing;
use herald::transport::{SignInput, sign};
use subtle::ConstantTimeEq as _;
use tokio::sync::Notify;

/// `herald receive`.
#[derive(Args, Clone)]
pub struct ReceiveArgs {
    /// Port to listen on (0: one the system picks, printed on the first line).
    #[arg(long, short, default_value_t = 9000)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// The endpoint's secret: verifies X-Tolq-Signature (HMAC-SHA1 hex) and Standard Webhooks
    /// (whsec_…) signatures.
    #[arg(long)]
    secret: Option<String>,
    /// The endpoint's security token: checks token headers such as x-memsource-token.
    #[arg(long, value_name = "TOKEN")]
    security_token: Option<String>,
    /// HTTP status to answer with (500 to watch herald retry).
    #[arg(long, default_value_t = 200)]
    status: u16,
    /// Body to answer with; by default `{"success": true}` (Ovesio's success) for a 2xx status
    /// and `{"success": false}` for any other.
    #[arg(long)]
    body: Option<String>,
    /// Exit after this many requests (scripts and tests).
    #[arg(long, value_name = "N")]
    exit_after: Option<u64>,
}

struct Receiver {
    args: ReceiveArgs,
    /// What every request is answered with.
    body: String,
    /// One JSON object a line instead of text.
    json: bool,
    status: StatusCode,
    /// Signing schemes to check, from the shipped policies (one of each).
    schemes: Vec<Signing>,
    seen: AtomicU64,
    enough: Notify,
}

/// Runs the receiver until Ctrl-C (or `--exit-after` requests); `json` prints each request as
/// one JSON line.
pub async fn run(args: ReceiveArgs, json: bool) -> Result<(), String> {
    let status = StatusCode::from_u16(args.status)
        .map_err(|_| format!("--status {}: not an HTTP status", args.status))?;
    let mut schemes: Vec<Signing> = Vec::new();
    for policy in PolicySet::built_in().iter() {
        if !matches!(policy.signing, Signing::None {}) && !schemes.contains(&policy.signing) {
            schemes.push(policy.signing.clone());
        }
    }
    let addr = SocketAddr::new(args.host, args.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    // With --port 0, the port the system picked.
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let body = args
        .body
        .clone()
        .unwrap_or_else(|| serde_json::json!({"success": status.is_success()}).to_string());
    let receiver = Arc::new(Receiver {
        args,
        body,
        json,
        status,
        schemes,
        seen: AtomicU64::new(0),
        enough: Notify::new(),
    });
    if json {
        println!(
            "{}",
            serde_json::json!({"listening": format!("http://{addr}/")})
        );
    } else {
        println!("herald receive: listening on http://{addr}/ — answering {status}");
        println!("  point an endpoint at http://{addr}/callbacks (any path works); Ctrl-C stops");
    }
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(receiver.clone());
    let stop = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = receiver.enough.notified() => {}
        }
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
        .map_err(|e| format!("receiver: {e}"))
}

async fn handle(
    State(receiver): State<Arc<Receiver>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let n = receiver.seen.fetch_add(1, Ordering::SeqCst) + 1;
    let verdicts = receiver.verdicts(&headers, &body);
    if receiver.json {
        let headers: serde_json::Map<String, serde_json::Value> = headers
            .iter()
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                (name.to_string(), value.into())
            })
            .collect();
        let line = serde_json::json!({
            "n": n, "method": method.as_str(), "path": uri.to_string(), "headers": headers,
            "body": String::from_utf8_lossy(&body), "signatures": verdicts,
            "answered": receiver.status.as_u16(),
        });
        println!("{line}");
    } else {
        print!(
            "{}",
            describe(
                n,
                &method,
                &uri,
                &headers,
                &body,
                &verdicts,
                receiver.status
            )
        );
    }
    if receiver.args.exit_after.is_some_and(|max| n >= max) {
        receiver.enough.notify_one();
    }
    (
        receiver.status,
        [(header::CONTENT_TYPE, "application/json")],
        receiver.body.clone(),
    )
}

/// A request as text: the request line, headers, body, signature verdicts, the answer.
fn describe(
    n: u64,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    verdicts: &[String],
    status: StatusCode,
) -> String {
    let mut out = format!(
        "\n── #{n} {method} {uri}  {}\n",
        humantime::format_rfc3339_millis(std::time::SystemTime::now())
    );
    for (name, value) in headers {
        out.push_str(&format!(
            "{name}: {}\n",
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    out.push('\n');
    out.push_str(&String::from_utf8_lossy(body));
    out.push('\n');
    for line in verdicts {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&format!("→ answered {status}\n"));
    out
}

impl Receiver {
    /// One line per signing scheme whose header the request carries.
    fn verdicts(&self, headers: &HeaderMap, body: &[u8]) -> Vec<String> {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let mut lines = Vec::new();
        for scheme in &self.schemes {
            let (header, label, needs) = match scheme {
                Signing::Hmac {
                    header,
                    algorithm,
                    encoding,
                } => (
                    header.as_str(),
                    format!("HMAC-{algorithm:?} {encoding:?}").to_uppercase(),
                    "--secret",
                ),
                Signing::Token { header } => (header.as_str(), "token".into(), "--security-token"),
                Signing::StandardWebhooks {} => (
                    "webhook-signature",
                    "Standard Webhooks v1".into(),
                    "--secret",
                ),
                Signing::None {} => continue,
            };
            let Some(received) = get(header) else {
                continue;
            };
            let secret = self.args.secret.as_deref();
            let token = self.args.security_token.as_deref();
            let missing = match needs {
                "--secret" => secret.is_none(),
                _ => token.is_none(),
            };
            if missing {
                lines.push(format!(
                    "signature: {header} ({label}) present; pass {needs} to verify it"
                ));
                continue;
            }
            let secrets: Vec<&str> = secret.into_iter().collect();
            let timestamp = get("webhook-timestamp")
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            let input = SignInput {
                message_id: get("webhook-id").unwrap_or(""),
                timestamp,
                body,
                secrets: &secrets,
                token,
            };
            let verdict = match sign(scheme, &input) {
                Err(e) => format!("cannot check ({e})"),
                Ok(expected) => {
                    let expected = expected
                        .iter()
                        .find(|(name, _)| name.eq_ignore_ascii_case(header))
                        .map(|(_, value)| value.clone())
                        .unwrap_or_default();
                    // Standard Webhooks may carry several signatures (secret rotation).
                    let matches = received
                        .split(' ')
                        .any(|one| bool::from(one.as_bytes().ct_eq(expected.as_bytes())));
                    if matches {
                        "ok".to_string()
                    } else {
                        "MISMATCH (wrong secret or token, or the body was changed)".to_string()
                    }
                }
            };
            lines.push(format!("signature: {header} ({label}): {verdict}"));
        }
        lines
    }
}
