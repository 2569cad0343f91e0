//! The operator console: a single-page web app under `/ui/`, compiled into the binary.
//!
//! The HTML and assets carry no data and need no token; the page signs in with the admin token
//! and calls the admin API like any other client. Every path under `/ui/` that is not an asset
//! answers with the app's one HTML page, so deep links (`/ui/deliveries/{id}`) survive a reload
//! and the app itself says "not found" for paths it does not know. These routes are not part of
//! the API and so not of its OpenAPI document.

use axum::Router;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use super::problem::ApiError;

/// Where the console lives.
const PREFIX: &str = "/ui";

/// An embedded file of `console/`, named by its path there.
macro_rules! asset {
    ($name:literal) => {{
        const BYTES: &[u8] =
            include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/console/", $name));
        Asset {
            name: $name,
            bytes: BYTES,
            etag: fnv1a(BYTES),
        }
    }};
}

/// Every file of `console/`, served at `/ui/assets/{name}`, except `index.html`: that is the
/// page itself, served for every other path under `/ui/`. A unit test checks that this list
/// and the files under `console/` agree.
const ASSETS: &[Asset] = &[
    asset!("index.html"),
    asset!("console.css"),
    asset!("favicon.svg"),
    asset!("js/api.js"),
    asset!("js/app.js"),
    asset!("js/chart.js"),
    asset!("js/dom.js"),
    asset!("js/format.js"),
    asset!("js/views/delivery.js"),
    asset!("js/views/deliveries.js"),
    asset!("js/views/endpoint.js"),
    asset!("js/views/endpoints.js"),
    asset!("js/views/not_found.js"),
    asset!("js/views/sign_in.js"),
];

/// No inline script or style, nothing from another origin, no framing, and no way to turn a
/// string into markup (Trusted Types with no policy: the app builds its DOM node by node, so
/// a response excerpt from a receiver can never become script).
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'; require-trusted-types-for 'script'; \
     trusted-types 'none'";

/// One file of the console, with its validator computed at compile time.
struct Asset {
    name: &'static str,
    bytes: &'static [u8],
    etag: u64,
}

/// 64-bit FNV-1a: enough to tell two builds' copies of a file apart.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

/// The console's routes; they take no state and no token. Every answer under `/ui` carries
/// the security headers — pages and assets, and the redirect and not-found answers too.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(PREFIX, get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(app))
        .route("/ui/assets/{*name}", get(asset_file))
        .route("/ui/{*path}", get(app))
        .layer(axum::middleware::map_response(with_security_headers))
}

async fn with_security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in security_headers() {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// The app's page, for `/ui/` and every deep link.
async fn app(request_headers: HeaderMap) -> Response {
    serve(
        asset_named("index.html").expect("index.html is embedded"),
        &request_headers,
    )
}

async fn asset_file(
    super::extract::ApiPath(name): super::extract::ApiPath<String>,
    uri: Uri,
    request_headers: HeaderMap,
) -> Response {
    match asset_named(&name) {
        // The page is only ever served under app paths, so relative links resolve one way.
        Some(asset) if asset.name != "index.html" => serve(asset, &request_headers),
        _ => ApiError::not_found(format!("no console asset at {}", uri.path())).into_response(),
    }
}

fn asset_named(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

/// The asset, cacheable; `304` when the browser's copy is current. Browsers
/// revalidate on every load (`no-cache`), so a new binary's console is never mixed with an
/// old one's cached modules.
fn serve(asset: &'static Asset, request_headers: &HeaderMap) -> Response {
    let etag = format!("\"{:016x}\"", asset.etag);
    let fresh = request_headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut response = asset.bytes.into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type(asset.name)),
        );
        response
    };
    let headers = response.headers_mut();
    headers.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).expect("hex is a valid header value"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn security_headers() -> [(HeaderName, &'static str); 7] {
    [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (
            HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        ),
        (
            HeaderName::from_static("permissions-policy"),
            "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_under_console_is_embedded_and_every_embedded_file_exists() {
        fn walk(dir: &std::path::Path, base: &std::path::Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, base, out);
                } else {
                    let relative = path.strip_prefix(base).unwrap();
                    out.push(relative.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("console");
        let mut on_disk = Vec::new();
        walk(&base, &base, &mut on_disk);
        on_disk.sort();
        let mut embedded: Vec<String> = ASSETS.iter().map(|a| a.name.to_string()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded);
    }

    #[test]
    fn every_asset_has_a_known_content_type_and_distinct_etag() {
        for asset in ASSETS {
            assert_ne!(
                content_type(asset.name),
                "application/octet-stream",
                "{}",
                asset.name
            );
        }
        let mut etags: Vec<u64> = ASSETS.iter().map(|a| a.etag).collect();
        etags.sort();
        etags.dedup();
        assert_eq!(etags.len(), ASSETS.len());
    }
}
