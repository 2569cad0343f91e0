//! The sidecar daemon: HTTP routes over the library, and `herald serve`.
//!
//! This module maps HTTP to library calls and nothing else: handlers in [`routes`] parse,
//! call [`crate::Herald`], and shape the answer; errors become problem+json in one place
//! ([`problem::ApiError`]); tokens are checked by middleware ([`auth`]).

mod auth;
mod extract;
mod problem;
pub mod routes;
mod views;

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

pub use auth::Tokens;
pub use problem::ApiError;

use crate::config::Config;
use crate::{EngineConfig, Herald};

/// Largest request body the API reads: the largest payload plus room for the envelope.
pub const MAX_REQUEST_BYTES: usize = crate::store::MAX_PAYLOAD_BYTES + 64 * 1024;

/// The complete HTTP API.
pub fn router(herald: Herald, tokens: Tokens, metrics: Option<PrometheusHandle>) -> Router {
    let producer = Router::new()
        .route("/v1/messages", post(routes::send))
        .route("/v1/messages/{id}", get(routes::message))
        .route_layer(middleware::from_fn_with_state(
            tokens.clone(),
            auth::producer,
        ));
    let admin = Router::new()
        .route(
            "/admin/endpoints",
            post(routes::create_endpoint).get(routes::list_endpoints),
        )
        .route(
            "/admin/endpoints/{id}",
            get(routes::get_endpoint)
                .patch(routes::update_endpoint)
                .delete(routes::delete_endpoint),
        )
        .route(
            "/admin/endpoints/{id}/enable",
            post(routes::enable_endpoint),
        )
        .route(
            "/admin/endpoints/{id}/disable",
            post(routes::disable_endpoint),
        )
        .route("/admin/deliveries", get(routes::list_deliveries))
        .route("/admin/deliveries/{id}", get(routes::get_delivery))
        .route(
            "/admin/deliveries/{id}/replay",
            post(routes::replay_delivery),
        )
        .route("/admin/replay", post(routes::bulk_replay))
        .route("/admin/replays/{id}", get(routes::replay_job))
        .route("/admin/policies", get(routes::list_policies))
        .route("/admin/policies/{name}", get(routes::get_policy))
        .route_layer(middleware::from_fn_with_state(tokens, auth::admin));
    let ops = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || {
                let rendered = metrics.as_ref().map(|m| m.render()).unwrap_or_default();
                async move { rendered }
            }),
        );
    producer
        .merge(admin)
        .with_state(herald)
        .merge(ops)
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
}

/// Runs the daemon until SIGTERM or SIGINT, then shuts down gracefully.
pub async fn serve(config: Config) -> Result<(), String> {
    let metrics = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| format!("metrics: {e}"))?;
    let mut builder = Herald::builder()
        .data_dir(&config.data_dir)
        .engine_config(EngineConfig {
            max_in_flight: config.max_in_flight,
            endpoint_concurrency: config.endpoint_concurrency,
            notify_url: config.notify_url.clone(),
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
    if tokens.admin.is_none() && tokens.producer.is_none() {
        tracing::warn!(listen = %config.listen, "no tokens configured: the API is open to anyone who can reach this loopback address");
    }
    let _housekeeping = schedule_housekeeping(&herald, &config).await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let names: Vec<String> = herald.policies().iter().map(|p| p.name.clone()).collect();
    tracing::info!(listen = %config.listen, data_dir = %config.data_dir.display(), policies = ?names, "herald serving");
    let app = router(herald.clone(), tokens, Some(metrics));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| format!("server: {e}"))?;
    tracing::info!("stopping: finishing attempts in flight");
    herald
        .shutdown_within(config.shutdown_grace)
        .await
        .map_err(|e| e.to_string())?;
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
    // Give in-flight HTTP requests a moment; axum stops accepting at once.
    tokio::time::sleep(Duration::from_millis(10)).await;
}
