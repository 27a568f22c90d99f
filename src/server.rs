//! The agent's HTTP server: webhook receivers, `/metrics`, `/healthz`, `/readyz`, `/status`.
//!
//! A receiver exists only when its secret is configured. A valid push for the tracked ref
//! wakes the reconcile loop and is answered 202 at once; triggers that arrive during a sync
//! coalesce into one more sync. Duplicate deliveries (same delivery id) are ignored.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::agent::Shared;

/// Webhook bodies larger than this are refused (GitHub's push payloads stay well below).
pub const MAX_WEBHOOK_BODY: usize = 5 * 1024 * 1024;
/// Delivery ids remembered for de-duplication.
const REMEMBERED_DELIVERIES: usize = 1024;

/// Secrets of the webhook receivers; a receiver without its secret is not served.
#[derive(Clone, Default)]
pub struct WebhookSecrets {
    /// GitHub's webhook secret (HMAC-SHA256 of the body in `X-Hub-Signature-256`).
    pub github: Option<Vec<u8>>,
    /// GitLab's secret token (`X-Gitlab-Token`).
    pub gitlab: Option<Vec<u8>>,
    /// The generic receiver's token: `Authorization: Bearer <token>`, or HMAC-SHA256 of the
    /// body with it in `X-Signature-256`.
    pub generic: Option<Vec<u8>>,
}

struct App {
    shared: Arc<Shared>,
    secrets: WebhookSecrets,
    /// The ref pushes must name (`refs/heads/main`); `None` follows an exact commit, which no
    /// push moves.
    tracked_ref: Option<String>,
    deliveries: Mutex<Deliveries>,
}

#[derive(Default)]
struct Deliveries {
    order: VecDeque<String>,
    seen: HashSet<String>,
}

impl Deliveries {
    /// Records an id; false when it was seen before.
    fn first_time(&mut self, id: &str) -> bool {
        if !self.seen.insert(id.to_string()) {
            return false;
        }
        self.order.push_back(id.to_string());
        if self.order.len() > REMEMBERED_DELIVERIES
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        true
    }
}

/// The router of the agent's HTTP server.
pub fn router(shared: Arc<Shared>, secrets: WebhookSecrets, tracked_ref: Option<String>) -> Router {
    let app = Arc::new(App {
        shared,
        secrets,
        tracked_ref,
        deliveries: Mutex::default(),
    });
    Router::new()
        .route("/hooks/github", post(github))
        .route("/hooks/gitlab", post(gitlab))
        .route("/hooks/generic", post(generic))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .layer(DefaultBodyLimit::max(MAX_WEBHOOK_BODY))
        .with_state(app)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// Constant-time equality of two secrets: their SHA-256 digests are compared byte by byte
/// without stopping early, so neither where they differ nor the secret's length shows in the
/// time taken.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Checks `sha256=<hex>` against HMAC-SHA256(secret, body), in constant time.
fn valid_signature(secret: &[u8], body: &[u8], signature: Option<&str>) -> bool {
    let Some(hex) = signature.and_then(|s| s.strip_prefix("sha256=")) else {
        return false;
    };
    let Some(expected) = decode_hex(hex) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() % 2 != 0 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

impl App {
    fn count(&self, provider: &str, result: &str) {
        self.shared
            .metrics
            .webhook_requests
            .with_label_values(&[provider, result])
            .inc();
    }

    /// After authentication: de-duplicates, checks the ref, and triggers a sync.
    fn accept_push(&self, provider: &str, delivery: Option<&str>, body: &[u8]) -> Response {
        if let Some(id) = delivery {
            let first = self
                .deliveries
                .lock()
                .map(|mut deliveries| deliveries.first_time(id))
                .unwrap_or(true);
            if !first {
                self.count(provider, "duplicate");
                return (StatusCode::OK, "duplicate delivery ignored\n").into_response();
            }
        }
        let pushed_ref = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|event| event.get("ref")?.as_str().map(str::to_string));
        if pushed_ref.is_none() || pushed_ref != self.tracked_ref {
            self.count(provider, "ignored");
            return (StatusCode::ACCEPTED, "not the tracked ref; ignored\n").into_response();
        }
        self.count(provider, "accepted");
        self.shared.trigger.notify_one();
        (StatusCode::ACCEPTED, "sync triggered\n").into_response()
    }
}

fn unauthorized(app: &App, provider: &str) -> Response {
    app.count(provider, "unauthorized");
    (StatusCode::UNAUTHORIZED, "bad signature or token\n").into_response()
}

async fn github(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(secret) = &app.secrets.github else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if !valid_signature(secret, &body, header(&headers, "x-hub-signature-256")) {
        return unauthorized(&app, "github");
    }
    match header(&headers, "x-github-event") {
        Some("push") => {}
        Some("ping") => {
            app.count("github", "ping");
            return (StatusCode::OK, "pong\n").into_response();
        }
        _ => {
            app.count("github", "ignored");
            return (StatusCode::ACCEPTED, "not a push; ignored\n").into_response();
        }
    }
    app.accept_push("github", header(&headers, "x-github-delivery"), &body)
}

async fn gitlab(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(token) = &app.secrets.gitlab else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let given = header(&headers, "x-gitlab-token").unwrap_or_default();
    if !constant_time_eq(given.as_bytes(), token) {
        return unauthorized(&app, "gitlab");
    }
    if !matches!(
        header(&headers, "x-gitlab-event"),
        Some("Push Hook" | "Tag Push Hook")
    ) {
        app.count("gitlab", "ignored");
        return (StatusCode::ACCEPTED, "not a push; ignored\n").into_response();
    }
    app.accept_push("gitlab", header(&headers, "x-gitlab-event-uuid"), &body)
}

async fn generic(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(token) = &app.secrets.generic else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let bearer = header(&headers, "authorization")
        .and_then(|value| value.strip_prefix("Bearer "))
        .is_some_and(|given| constant_time_eq(given.as_bytes(), token));
    let signed = valid_signature(token, &body, header(&headers, "x-signature-256"));
    if !bearer && !signed {
        return unauthorized(&app, "generic");
    }
    app.count("generic", "accepted");
    app.shared.trigger.notify_one();
    (StatusCode::ACCEPTED, "sync triggered\n").into_response()
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        app.shared.metrics.render(),
    )
        .into_response()
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    let status = app.shared.status.read().await;
    if status.ready {
        return (StatusCode::OK, "ready\n").into_response();
    }
    let reason = status
        .error
        .clone()
        .unwrap_or_else(|| "no sync has succeeded on every cluster yet".into());
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("not ready: {reason}\n"),
    )
        .into_response()
}

async fn status(State(app): State<Arc<App>>) -> Response {
    let status = app.shared.status.read().await.clone();
    axum::Json(status).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &[u8], body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
        mac.update(body);
        let bytes = mac.finalize().into_bytes();
        format!(
            "sha256={}",
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        )
    }

    #[test]
    fn signatures_are_checked_over_the_raw_body() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let signature = sign(b"secret", body);
        assert!(valid_signature(b"secret", body, Some(&signature)));
        assert!(!valid_signature(b"other", body, Some(&signature)));
        assert!(!valid_signature(b"secret", b"{}", Some(&signature)));
        assert!(!valid_signature(b"secret", body, Some("sha256=zz")));
        assert!(!valid_signature(b"secret", body, None));
        assert!(!valid_signature(
            b"secret",
            body,
            Some(signature.trim_start_matches("sha256="))
        ));
    }

    #[test]
    fn deliveries_are_remembered_up_to_a_bound() {
        let mut deliveries = Deliveries::default();
        assert!(deliveries.first_time("a"));
        assert!(!deliveries.first_time("a"));
        for i in 0..REMEMBERED_DELIVERIES {
            assert!(deliveries.first_time(&i.to_string()));
        }
        assert!(deliveries.first_time("a"), "the oldest id was forgotten");
        assert_eq!(deliveries.seen.len(), REMEMBERED_DELIVERIES);
    }

    #[test]
    fn token_comparison_needs_equal_bytes() {
        assert!(constant_time_eq(b"token", b"token"));
        assert!(!constant_time_eq(b"token", b"tokem"));
        assert!(!constant_time_eq(b"token", b"token2"));
    }
}
