//! Webhook receivers: GitHub, GitLab and a generic one, each checking its signature or token,
//! then de-duplicating the delivery and triggering a sync for a push to the tracked ref.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::App;

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

/// Deliveries seen, as SHA-256 digests of the provider and the body: what the signature (or
/// token) authenticates. A delivery id header is not signed, so a replayed push with a new id
/// is still the same delivery; and a digest is 32 bytes whatever the id's length.
pub(super) struct Deliveries {
    order: VecDeque<[u8; 32]>,
    seen: HashSet<[u8; 32]>,
    /// How many are remembered (`--dedupe-entries`); the oldest is forgotten first.
    capacity: usize,
}

impl Deliveries {
    pub(super) fn new(capacity: usize) -> Self {
        Deliveries {
            order: VecDeque::new(),
            seen: HashSet::new(),
            capacity,
        }
    }

    /// Records a delivery; false when it was seen before.
    fn first_time(&mut self, provider: &str, body: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::new()
            .chain_update(provider.as_bytes())
            .chain_update([0])
            .chain_update(body)
            .finalize()
            .into();
        if !self.seen.insert(digest) {
            return false;
        }
        self.order.push_back(digest);
        while self.order.len() > self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        true
    }
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
        self.metrics()
            .webhook_requests
            .with_label_values(&[provider, result])
            .inc();
    }

    /// After authentication: de-duplicates, checks the ref, and triggers a sync.
    fn accept_push(&self, provider: &str, body: &[u8]) -> Response {
        let first = self
            .deliveries
            .lock()
            .map(|mut deliveries| deliveries.first_time(provider, body))
            .unwrap_or(true);
        if !first {
            self.count(provider, "duplicate");
            return (StatusCode::OK, "duplicate delivery ignored\n").into_response();
        }
        let pushed_ref = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|event| event.get("ref")?.as_str().map(str::to_string));
        if pushed_ref.is_none() || pushed_ref != self.tracked_ref {
            self.count(provider, "ignored");
            return (StatusCode::ACCEPTED, "not the tracked ref; ignored\n").into_response();
        }
        self.count(provider, "accepted");
        self.trigger().notify_one();
        (StatusCode::ACCEPTED, "sync triggered\n").into_response()
    }
}

fn unauthorized(app: &App, provider: &str) -> Response {
    app.count(provider, "unauthorized");
    (StatusCode::UNAUTHORIZED, "bad signature or token\n").into_response()
}

pub(super) async fn github(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
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
    app.accept_push("github", &body)
}

pub(super) async fn gitlab(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
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
    app.accept_push("gitlab", &body)
}

pub(super) async fn generic(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
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
    app.trigger().notify_one();
    (StatusCode::ACCEPTED, "sync triggered\n").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::tests::sign;

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
    fn deliveries_are_the_authenticated_bodies_remembered_up_to_a_bound() {
        let capacity = 16;
        let mut deliveries = Deliveries::new(capacity);
        assert!(deliveries.first_time("github", b"push a"));
        // A replay of the same signed body is the same delivery, whatever its id header says.
        assert!(!deliveries.first_time("github", b"push a"));
        assert!(deliveries.first_time("gitlab", b"push a"), "per provider");
        for i in 0..capacity {
            assert!(deliveries.first_time("github", i.to_string().as_bytes()));
        }
        assert!(
            deliveries.first_time("github", b"push a"),
            "the oldest was forgotten"
        );
        assert_eq!(deliveries.seen.len(), capacity);
        assert_eq!(deliveries.order.len(), capacity);
    }

    #[test]
    fn token_comparison_needs_equal_bytes() {
        assert!(constant_time_eq(b"token", b"token"));
        assert!(!constant_time_eq(b"token", b"tokem"));
        assert!(!constant_time_eq(b"token", b"token2"));
    }
}
