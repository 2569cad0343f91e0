//! OpenTelemetry: herald's spans exported over OTLP/HTTP, and W3C trace context in and out.
//!
//! Off unless an OTLP endpoint is configured: then [`layer`] gives a `tracing` layer that
//! turns herald's `accept` and `attempt` spans into OpenTelemetry spans, exported in batches
//! (protobuf, `POST {endpoint}/v1/traces`) by the SDK's batch processor on its own thread.
//! Without it no exporter runs, and the helpers below find no trace context and do nothing.
//!
//! Trace context travels the W3C way: a producer's `traceparent` on `POST /v1/messages`
//! parents a span of the request ([`remote_parent`]; without one the accepting span is the
//! trace's root); the accepting span's own `traceparent` is stored with the message
//! (`traceparent`) so that every attempt, after a restart too, joins that trace
//! (`parent`); and each delivery request carries the attempt span's `traceparent`
//! (`context_headers`), so a receiver's tracing joins it.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HeaderExtractor, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::registry::LookupSpan;

/// The running exporter. [`Export::shutdown`] sends what is still batched.
pub struct Export {
    provider: SdkTracerProvider,
}

impl Export {
    /// Flushes the spans not yet exported and stops the exporter.
    pub async fn shutdown(self) {
        let provider = self.provider;
        let stopped = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(e)) = stopped {
            eprintln!("herald: spans not exported at shutdown: {e}");
        }
    }
}

/// A layer exporting herald's spans to the OTLP/HTTP collector at `endpoint` (e.g.
/// `http://collector:4318`), and the exporter behind it. Call from within the tokio runtime:
/// requests go out on it.
pub fn layer<S>(endpoint: &str) -> Result<(impl Layer<S>, Export), String>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    url::Url::parse(&url).map_err(|e| format!("otlp_endpoint {endpoint:?}: {e}"))?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| format!("otlp_endpoint: {e}"))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(OnRuntime {
            client,
            runtime: tokio::runtime::Handle::current(),
        })
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .build()
        .map_err(|e| format!("otlp_endpoint: {e}"))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name("herald").build())
        .build();
    let tracer = provider.tracer("herald");
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(filter_fn(taken_for_export));
    Ok((layer, Export { provider }))
}

/// What the exporter takes: herald's spans, which are DEBUG (one per message and per attempt:
/// detail a log at the default level leaves out, so the log filter does not create them), and
/// herald's events from INFO up, which become events of their spans.
fn taken_for_export(metadata: &tracing::Metadata<'_>) -> bool {
    let target = metadata.target();
    let herald = target == "herald" || target.starts_with("herald::");
    let level = if metadata.is_span() {
        tracing::Level::DEBUG
    } else {
        tracing::Level::INFO
    };
    herald && *metadata.level() <= level
}

/// The exporter's HTTP client: the batch processor runs on a thread of its own, so each
/// request is handed to the runtime that herald's other HTTP traffic uses.
#[derive(Debug)]
struct OnRuntime {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let sent = self.runtime.spawn(async move {
            let response = client.execute(reqwest::Request::try_from(request)?).await?;
            let mut answer = Response::builder().status(response.status());
            if let Some(headers) = answer.headers_mut() {
                *headers = response.headers().clone();
            }
            Ok::<_, HttpError>(answer.body(response.bytes().await?)?)
        });
        sent.await?
    }
}

/// `span`'s OpenTelemetry context, when a `tracing-opentelemetry` layer builds one for it
/// (herald's exporter, or an embedding application's own layer). Without one there is
/// nothing to propagate, and checking first spares every send and attempt the carriers.
fn exported(span: &tracing::Span) -> Option<Context> {
    use opentelemetry::trace::TraceContextExt as _;
    let context = span.context();
    context.has_active_span().then_some(context)
}

/// Whether `span` is exported: attributes recorded only for the exporter can be skipped.
pub(crate) fn is_exported(span: &tracing::Span) -> bool {
    exported(span).is_some()
}

/// The W3C `traceparent` of `span`, when it is exported.
pub(crate) fn traceparent(span: &tracing::Span) -> Option<String> {
    let context = exported(span)?;
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes a stored `traceparent` the parent of `span` (before the span is first entered).
pub(crate) fn parent(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(traceparent) = traceparent {
        let carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
        let _ = span.set_parent(TraceContextPropagator::new().extract(&carrier));
    }
}

/// The trace context a producer sent (`traceparent`, `tracestate`); `None` without a valid one.
pub fn remote_parent(headers: &axum::http::HeaderMap) -> Option<Context> {
    use opentelemetry::trace::TraceContextExt as _;
    if !headers.contains_key("traceparent") {
        return None;
    }
    let context = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    context.span().span_context().is_valid().then_some(context)
}

/// The headers that carry `span`'s trace context to a receiver; none when it is not exported.
pub(crate) fn context_headers(span: &tracing::Span) -> Vec<(String, String)> {
    let Some(context) = exported(span) else {
        return Vec::new();
    };
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.into_iter().collect()
}
