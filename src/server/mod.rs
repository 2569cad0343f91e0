//! The sidecar daemon: HTTP routes over the library, and `herald serve`.
//!
//! This module maps HTTP to library calls and nothing else: handlers in [`routes`] parse,
//! call [`crate::Herald`], and shape the answer; errors become problem+json in one place
//! ([`problem::ApiError`]); tokens are checked by middleware (`auth`).

mod auth;
mod connections;
mod console;
mod extract;
mod openapi;
mod problem;
pub mod routes;
mod telemetry;
mod threads;
mod views;

use axum::Extension;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Uri};
use axum::middleware;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;

pub use auth::Tokens;
pub use connections::ConnectionLimits;
pub use problem::ApiError;

use crate::config::Config;
use crate::{EngineConfig, Herald};

/// Largest request body the API reads: the largest payload plus room for the envelope.
pub const MAX_REQUEST_BYTES: usize = crate::store::MAX_PAYLOAD_BYTES + 64 * 1024;

/// The complete HTTP API. Every answer that is not a success is problem+json: handlers and
/// extractors return [`ApiError`], and so do the fallbacks for unknown routes and methods and
/// the layers (tokens, the loopback `Host` check, the JSON-only body rule).
pub fn router(herald: Herald, tokens: Tokens, metrics: Option<PrometheusHandle>) -> Router {
    let open = tokens.open();
    let (api, openapi) = api_router(tokens).split_for_parts();
    let openapi = openapi::with_layer_responses(openapi);
    let router = api
        .with_state(herald)
        .merge(console::router())
        .fallback(|| async { ApiError::not_found("no such route") })
        // After every route: it is set on the routes registered so far.
        .method_not_allowed_fallback(|method: Method, uri: Uri| async move {
            ApiError::method_not_allowed(method.as_str(), uri.path())
        })
        .layer(Extension(std::sync::Arc::new(openapi)))
        .layer(Extension(metrics))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .layer(middleware::from_fn(extract::require_json_bodies));
    if open {
        router.layer(middleware::from_fn(auth::loopback_hosts_only))
    } else {
        router
    }
}

/// The OpenAPI document of the producer and admin routes, as `GET /openapi.json` serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    openapi::with_layer_responses(api_router(Tokens::default()).into_openapi())
}

/// Producer and admin routes, each registered with its OpenAPI description in one step.
fn api_router(tokens: Tokens) -> OpenApiRouter<Herald> {
    use routes::{deliveries, endpoints, messages, ops, policies};
    // Shared, not copied into every request.
    let tokens = std::sync::Arc::new(tokens);
    let ops = OpenApiRouter::new()
        .routes(utoipa_axum::routes!(ops::healthz))
        .routes(utoipa_axum::routes!(ops::readyz))
        .routes(utoipa_axum::routes!(ops::metrics))
        .routes(utoipa_axum::routes!(ops::openapi));
    let producer = OpenApiRouter::new()
        .routes(utoipa_axum::routes!(messages::send))
        .routes(utoipa_axum::routes!(messages::message))
        .route_layer(middleware::from_fn_with_state(
            tokens.clone(),
            auth::producer,
        ));
    let admin = OpenApiRouter::new()
        .routes(utoipa_axum::routes!(
            endpoints::create_endpoint,
            endpoints::list_endpoints
        ))
        .routes(utoipa_axum::routes!(
            endpoints::get_endpoint,
            endpoints::update_endpoint,
            endpoints::delete_endpoint
        ))
        .routes(utoipa_axum::routes!(endpoints::enable_endpoint))
        .routes(utoipa_axum::routes!(endpoints::disable_endpoint))
        .routes(utoipa_axum::routes!(endpoints::test_endpoint))
        .routes(utoipa_axum::routes!(endpoints::endpoint_stats))
        .routes(utoipa_axum::routes!(deliveries::list_deliveries))
        .routes(utoipa_axum::routes!(deliveries::get_delivery))
        .routes(utoipa_axum::routes!(deliveries::replay_delivery))
        .routes(utoipa_axum::routes!(deliveries::retry_delivery))
        .routes(utoipa_axum::routes!(deliveries::cancel_delivery))
        .routes(utoipa_axum::routes!(deliveries::bulk_replay))
        .routes(utoipa_axum::routes!(deliveries::replay_job))
        .routes(utoipa_axum::routes!(policies::list_policies))
        .routes(utoipa_axum::routes!(policies::get_policy))
        .routes(utoipa_axum::routes!(ops::backup))
        .route_layer(middleware::from_fn_with_state(tokens, auth::admin));
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(producer)
        .merge(admin)
        .merge(ops)
}

/// Runs the daemon until SIGTERM or SIGINT, then shuts down gracefully.
pub async fn serve(config: Config) -> Result<(), String> {
    // Everything herald creates (the store, its ledger, the key, backups) is for its own user
    // only, whether or not a service manager sets a umask.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    // Bind before creating anything: a port in use must leave no data directory behind.
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    // The address bound: with port 0, the one the system picked, which `herald serving` says.
    let listening = listener
        .local_addr()
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let metrics = telemetry::install()?;
    let deliveries = threads::DeliveryThreads::start(config.delivery_niceness)?;
    let mut builder = Herald::builder()
        .data_dir(&config.data_dir)
        .store(config.store.clone())
        .engine_config(EngineConfig {
            max_in_flight: config.max_in_flight,
            endpoint_concurrency: config.endpoint_concurrency,
            notify_url: config.notify_url.clone(),
            unrouted: config.unrouted,
            delivery_runtime: deliveries.handle(),
            client: crate::transport::ClientOptions {
                proxy: config.proxy.clone(),
                no_proxy: config.no_proxy.clone(),
                targets: crate::transport::TargetPolicy {
                    allow_private: config.allow_private_targets,
                    allow: config.allow_cidrs.clone(),
                },
                ..Default::default()
            },
            ..EngineConfig::default()
        })
        .store_options(crate::store::SledOptions {
            cache_bytes: config.cache_bytes,
            secret_key: config.secret_key_bytes().map_err(|e| e.to_string())?,
            ..Default::default()
        });
    if config.policies_dir.is_dir() {
        builder = builder.policies_dir(&config.policies_dir);
    } else {
        tracing::info!(dir = %config.policies_dir.display(), "no policies directory; using the built-in policies");
    }
    let herald = builder.open().await.map_err(|e| e.to_string())?;
    let tokens = Tokens {
        admin: config.admin_token.clone(),
        producer: config.producer_token.clone(),
    };
    if config.allow_private_targets {
        tracing::warn!(
            "HERALD_ALLOW_PRIVATE_TARGETS is on: deliveries may reach loopback, private and metadata addresses"
        );
    }
    if tokens.admin.is_none() && tokens.producer.is_some() {
        tracing::warn!(
            "HERALD_PRODUCER_TOKEN is set without HERALD_ADMIN_TOKEN: the admin API, the CLI's admin commands and the console refuse every request; set HERALD_ADMIN_TOKEN to use them"
        );
    }
    if tokens.admin.is_none() && tokens.producer.is_none() {
        tracing::warn!(listen = %listening, "no tokens configured: the API is open to anyone who can reach this loopback address");
    }
    let _housekeeping = schedule_housekeeping(&herald, &config).await?;
    let names: Vec<String> = herald.policies().iter().map(|p| p.name.clone()).collect();
    let data_dir =
        std::path::absolute(&config.data_dir).unwrap_or_else(|_| config.data_dir.clone());
    let store = match config.store.as_str() {
        "sled" => "sled".to_string(),
        url => crate::transport::redact(url),
    };
    tracing::info!(listen = %listening, store = %store, data_dir = %data_dir.display(), policies = ?names, "herald serving");
    let app = router(herald.clone(), tokens, Some(metrics));
    let limits = ConnectionLimits {
        header_read_timeout: config.header_read_timeout,
        body_read_timeout: config.body_read_timeout,
        idle_timeout: config.idle_timeout,
        max_connections: config.max_connections,
    };
    connections::serve(
        listener,
        app,
        limits,
        shutdown_signal(),
        config.shutdown_grace,
    )
    .await;
    tracing::info!("stopping: finishing attempts in flight");
    herald
        .shutdown_within(config.shutdown_grace)
        .await
        .map_err(|e| e.to_string())?;
    drop(deliveries);
    tracing::info!("stopped");
    Ok(())
}

/// Runs the retention purge on `housekeeping_cron` (tokio-cron-scheduler). Its ticker wakes
/// twice a second: the one timer in the daemon that herald does not control.
async fn schedule_housekeeping(
    herald: &Herald,
    config: &Config,
) -> Result<tokio_cron_scheduler::JobScheduler, String> {
    use tokio_cron_scheduler::{Job, JobScheduler};
    let scheduler = JobScheduler::new()
        .await
        .map_err(|e| format!("housekeeping scheduler: {e}"))?;
    let (herald, retention) = (herald.clone(), config.retention);
    let job = Job::new_async(config.housekeeping_cron.as_str(), move |_, _| {
        let herald = herald.clone();
        Box::pin(async move {
            if let Err(e) = herald.housekeeping(retention).await {
                tracing::error!(error = %e, "housekeeping failed; it runs again at its next time");
            }
        })
    })
    .map_err(|e| format!("housekeeping_cron {:?}: {e}", config.housekeeping_cron))?;
    scheduler
        .add(job)
        .await
        .map_err(|e| format!("housekeeping scheduler: {e}"))?;
    scheduler
        .start()
        .await
        .map_err(|e| format!("housekeeping scheduler: {e}"))?;
    tracing::info!(cron = %config.housekeeping_cron, retention = %humantime::format_duration(config.retention), "housekeeping scheduled");
    Ok(scheduler)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
