//! The agent's HTTP server: webhook receivers, `/metrics`, `/healthz`, `/readyz`, `/status`.
//!
//! A receiver exists only when its secret is configured. A valid push for the tracked ref
//! wakes the reconcile loop and is answered 202 at once; triggers that arrive during a sync
//! coalesce into one more sync. Duplicate deliveries (the same authenticated body) are ignored.
//!
//! Its [`ServerLimits`]: a webhook body over `max_body` is refused (413) before it is read when
//! its Content-Length says so, and cut off there otherwise; at most `max_concurrent_requests`
//! webhook requests are served at once and more are answered 503 before their body is read
//! (each may buffer up to `max_body` before its signature can be checked, and held uploads
//! must not grow the agent past its memory limit); a webhook request taking longer than
//! `body_timeout`, upload included, is answered 408; `dedupe_entries` deliveries (32 bytes
//! each) are remembered.
//!
//! This module holds the router, the limits middleware, `serve` (with its bounded shutdown)
//! and the read-only routes; the receivers, their signature and token checks and delivery
//! de-duplication are in `webhooks`.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::{Notify, watch};

use crate::limits::ServerLimits;
use crate::metrics::Metrics;
use crate::status::Status;

mod webhooks;

pub use webhooks::WebhookSecrets;
use webhooks::{Deliveries, generic, github, gitlab};

/// What the server reads from the agent and signals to it.
#[derive(Clone)]
pub struct AgentLink {
    /// The newest status, for `/status` and `/readyz`.
    pub status: watch::Receiver<Status>,
    /// Wakes the agent's loop.
    pub trigger: Arc<Notify>,
    /// What `/metrics` renders and the receivers count into.
    pub metrics: Arc<Metrics>,
}

/// What every handler shares: the agent's state, the receivers' secrets and what they remember.
struct App {
    agent: AgentLink,
    secrets: WebhookSecrets,
    /// The ref pushes must name (`refs/heads/main`); `None` follows an exact commit, which no
    /// push moves.
    tracked_ref: Option<String>,
    deliveries: Mutex<Deliveries>,
}

impl App {
    /// The status now, borrowed: a probe reads one field, so nothing is copied.
    fn status(&self) -> watch::Ref<'_, Status> {
        self.agent.status.borrow()
    }

    /// Wakes the reconcile loop.
    fn trigger(&self) -> &Notify {
        &self.agent.trigger
    }

    /// What `/metrics` renders and the receivers count into.
    fn metrics(&self) -> &Metrics {
        &self.agent.metrics
    }
}

/// The router of the agent's HTTP server, serving webhooks within `limits`.
pub fn router(
    agent: AgentLink,
    secrets: WebhookSecrets,
    tracked_ref: Option<String>,
    limits: &ServerLimits,
) -> Router {
    let app = Arc::new(App {
        agent,
        secrets,
        tracked_ref,
        deliveries: Mutex::new(Deliveries::new(limits.dedupe_entries)),
    });
    let webhooks = Router::new()
        .route("/hooks/github", post(github))
        .route("/hooks/gitlab", post(gitlab))
        .route("/hooks/generic", post(generic))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::new(WebhookPermits {
                permits: tokio::sync::Semaphore::new(limits.max_concurrent_requests),
                timeout: limits.body_timeout,
                max_body: limits.max_body,
            }),
            limit_webhooks,
        ));
    Router::new()
        .merge(webhooks)
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .layer(DefaultBodyLimit::max(limits.max_body))
        .with_state(app)
}

/// The webhook requests being served, how long each may take and how large its body may be.
struct WebhookPermits {
    permits: tokio::sync::Semaphore,
    timeout: std::time::Duration,
    max_body: usize,
}

/// At most `--max-concurrent-requests` webhook requests at once, each within
/// `--body-timeout`; the permit is taken before the body is read, and a `Content-Length` over
/// `--max-body` is refused before any of it is read (the body extractor's limit then covers
/// chunked bodies, which say no length).
async fn limit_webhooks(
    State(limit): State<Arc<WebhookPermits>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit.max_body as u64) {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "webhook body over the limit of {} bytes (--max-body)\n",
                limit.max_body
            ),
        )
            .into_response();
    }
    let Ok(_permit) = limit.permits.try_acquire() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(axum::http::header::RETRY_AFTER, "1")],
            "too many webhook requests at once\n",
        )
            .into_response();
    };
    match tokio::time::timeout(limit.timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (StatusCode::REQUEST_TIMEOUT, "webhook request too slow\n").into_response(),
    }
}

/// After the stop signal, open connections get this long to finish.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves `app` on `listener` until `stop` completes, with the timeouts `axum::serve` lacks:
/// headers within `--header-timeout` (an idle keep-alive connection waits for headers, so it
/// is closed then), connections for at most `--idle-timeout` however busy, at most
/// `--max-connections` at once (each holds a file descriptor, which the agent also needs for
/// its kubeconfigs and member clusters; more are closed as they arrive), and a bounded
/// shutdown: slow or idle clients can neither exhaust the agent's file descriptors nor hold
/// SIGTERM.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    stop: impl std::future::Future<Output = ()>,
    limits: &ServerLimits,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let (header_timeout, lifetime) = (limits.header_timeout, limits.idle_timeout);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => accepted,
            // Reap finished connections as they go.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors, say: wait a little rather than spin.
                tracing::warn!(%error, "accepting a connection");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        connections.spawn(async move {
            let _permit = permit;
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(lifetime, connection).await;
        });
    }
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drained).await.is_err() {
        connections.abort_all();
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        app.metrics().render(),
    )
        .into_response()
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    let reason = {
        let status = app.status();
        if status.ready {
            return (StatusCode::OK, "ready\n").into_response();
        }
        status
            .error
            .clone()
            .unwrap_or_else(|| "no sync has succeeded on every cluster yet".into())
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("not ready: {reason}\n"),
    )
        .into_response()
}

async fn status(State(app): State<Arc<App>>) -> Response {
    axum::Json(&*app.status()).into_response()
}

#[cfg(test)]
mod tests;
