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
use crate::limits::ServerLimits;

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

/// Deliveries seen, as SHA-256 digests of the provider and the body: what the signature (or
/// token) authenticates. A delivery id header is not signed, so a replayed push with a new id
/// is still the same delivery; and a digest is 32 bytes whatever the id's length.
struct Deliveries {
    order: VecDeque<[u8; 32]>,
    seen: HashSet<[u8; 32]>,
    /// How many are remembered (`--dedupe-entries`); the oldest is forgotten first.
    capacity: usize,
}

impl Deliveries {
    fn new(capacity: usize) -> Self {
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

/// The router of the agent's HTTP server, serving webhooks within `limits`.
pub fn router(
    shared: Arc<Shared>,
    secrets: WebhookSecrets,
    tracked_ref: Option<String>,
    limits: &ServerLimits,
) -> Router {
    let app = Arc::new(App {
        shared,
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
    app.accept_push("github", &body)
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
    app.accept_push("gitlab", &body)
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

    fn test_shared() -> Arc<Shared> {
        Arc::new(Shared {
            status: Default::default(),
            trigger: Default::default(),
            metrics: crate::metrics::Metrics::new().unwrap(),
        })
    }

    #[tokio::test]
    async fn webhook_requests_beyond_the_limit_are_refused_before_their_body_is_read() {
        use tower::ServiceExt as _;
        let shared = test_shared();
        let secrets = WebhookSecrets {
            generic: Some(b"token".to_vec()),
            ..Default::default()
        };
        let limits = ServerLimits {
            max_concurrent_requests: 2,
            ..Default::default()
        };
        let app = router(shared, secrets, Some("refs/heads/main".into()), &limits);
        // Uploads that never finish hold every permit.
        let mut held = Vec::new();
        for _ in 0..limits.max_concurrent_requests {
            let (sender, body) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
            let body = axum::body::Body::from_stream(tokio_stream_from(body));
            let request = axum::http::Request::post("/hooks/generic")
                .body(body)
                .unwrap();
            let app = app.clone();
            held.push((sender, tokio::spawn(app.oneshot(request))));
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let authorised_push = || {
            axum::http::Request::post("/hooks/generic")
                .header("authorization", "Bearer token")
                .body(axum::body::Body::empty())
                .unwrap()
        };
        let refused = app.clone().oneshot(authorised_push()).await.unwrap();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        // Other routes are not limited.
        let health = app
            .clone()
            .oneshot(
                axum::http::Request::get("/healthz")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(health.status(), StatusCode::OK);
        // Ending the held uploads frees the permits.
        for (sender, task) in held {
            drop(sender);
            let _ = task.await;
        }
        let accepted = app.oneshot(authorised_push()).await.unwrap();
        assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    }

    fn generic_app(limits: &ServerLimits) -> Router {
        let secrets = WebhookSecrets {
            generic: Some(b"token".to_vec()),
            github: Some(b"secret".to_vec()),
            ..Default::default()
        };
        router(
            test_shared(),
            secrets,
            Some("refs/heads/main".into()),
            limits,
        )
    }

    #[tokio::test]
    async fn a_body_over_max_body_is_refused_before_it_is_read() {
        use tower::ServiceExt as _;
        let limits = ServerLimits {
            max_body: 1024,
            ..Default::default()
        };
        let app = generic_app(&limits);
        // A declared length over the limit: answered at once, though no byte of it ever comes
        // (the sender is kept, so reading the body would wait for ever).
        let (_sender, body) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let request = axum::http::Request::post("/hooks/generic")
            .header("authorization", "Bearer token")
            .header("content-length", "2048")
            .body(axum::body::Body::from_stream(tokio_stream_from(body)))
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        // A chunked body (no length) is cut off at the limit.
        let (sender, body) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        for _ in 0..3 {
            sender.send(Ok(Bytes::from(vec![b'x'; 512]))).await.unwrap();
        }
        drop(sender);
        let request = axum::http::Request::post("/hooks/generic")
            .header("authorization", "Bearer token")
            .body(axum::body::Body::from_stream(tokio_stream_from(body)))
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        // Within the limit, the push is served.
        let request = axum::http::Request::post("/hooks/generic")
            .header("authorization", "Bearer token")
            .body(axum::body::Body::from(vec![b'x'; 1000]))
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }

    #[tokio::test]
    async fn a_body_slower_than_body_timeout_is_answered_408() {
        use tower::ServiceExt as _;
        let limits = ServerLimits {
            body_timeout: std::time::Duration::from_millis(200),
            ..Default::default()
        };
        let app = generic_app(&limits);
        // The upload starts and never ends.
        let (sender, body) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        sender.send(Ok(Bytes::from_static(b"{"))).await.unwrap();
        let request = axum::http::Request::post("/hooks/generic")
            .header("authorization", "Bearer token")
            .body(axum::body::Body::from_stream(tokio_stream_from(body)))
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
        drop(sender);
    }

    #[tokio::test]
    async fn dedupe_entries_bounds_what_is_remembered() {
        use tower::ServiceExt as _;
        let limits = ServerLimits {
            dedupe_entries: 1,
            ..Default::default()
        };
        let app = generic_app(&limits);
        let push = |body: &'static [u8]| {
            axum::http::Request::post("/hooks/github")
                .header("x-github-event", "push")
                .header("x-hub-signature-256", sign(b"secret", body))
                .body(axum::body::Body::from(body))
                .unwrap()
        };
        let a: &[u8] = br#"{"ref":"refs/heads/main","after":"a"}"#;
        let b: &[u8] = br#"{"ref":"refs/heads/main","after":"b"}"#;
        let statuses = [a, a, b, a];
        let mut answers = Vec::new();
        for body in statuses {
            let response = app.clone().oneshot(push(body)).await.unwrap();
            answers.push(response.status());
        }
        // The second `a` is a duplicate; after `b` took the only entry, `a` is new again.
        assert_eq!(
            answers,
            [
                StatusCode::ACCEPTED,
                StatusCode::OK,
                StatusCode::ACCEPTED,
                StatusCode::ACCEPTED
            ]
        );
    }

    /// Serves `limits` on a loopback port until the returned sender is dropped or used.
    async fn serve_on_loopback(
        limits: ServerLimits,
    ) -> (
        std::net::SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let app = router(test_shared(), WebhookSecrets::default(), None, &limits);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            serve(
                listener,
                app,
                async {
                    let _ = stopped.await;
                },
                &limits,
            )
            .await
        });
        (address, stop, server)
    }

    /// Reads until the server closes the connection; what it sent. A generous read timeout
    /// keeps a broken server from hanging the test (it is a bound, not a measurement).
    fn read_until_closed(stream: &mut std::net::TcpStream) -> String {
        use std::io::Read as _;
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(60)))
            .unwrap();
        let mut answer = Vec::new();
        let result = stream.read_to_end(&mut answer);
        assert!(
            result.is_ok()
                || result
                    .as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "the connection was not closed: {result:?}"
        );
        String::from_utf8_lossy(&answer).into_owned()
    }

    #[tokio::test]
    async fn header_and_idle_timeouts_close_connections_each_on_its_own() {
        use std::io::Write as _;
        let (short, long) = (
            std::time::Duration::from_millis(300),
            std::time::Duration::from_secs(600),
        );
        // Each timeout short while the other is long, so each closes on its own.
        for (header_timeout, idle_timeout) in [(short, long), (long, short)] {
            let limits = ServerLimits {
                header_timeout,
                idle_timeout,
                ..Default::default()
            };
            let (address, stop, server) = serve_on_loopback(limits).await;
            let (half_answer, idle_answer) = tokio::task::spawn_blocking(move || {
                // Headers that never end.
                let mut half = std::net::TcpStream::connect(address).unwrap();
                half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                    .unwrap();
                let half_answer = read_until_closed(&mut half);
                // A served request on a keep-alive connection, then nothing (hyper waits
                // for the next request's headers, so --header-timeout closes it too).
                let mut idle = std::net::TcpStream::connect(address).unwrap();
                idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                    .unwrap();
                let idle_answer = read_until_closed(&mut idle);
                (half_answer, idle_answer)
            })
            .await
            .unwrap();
            assert!(!half_answer.contains("200 OK"), "{half_answer}");
            assert!(idle_answer.starts_with("HTTP/1.1 200"), "{idle_answer}");
            let _ = stop.send(());
            server.await.unwrap();
        }
    }

    #[tokio::test]
    async fn connections_over_max_connections_are_closed_unanswered() {
        use std::io::Write as _;
        let limits = ServerLimits {
            max_connections: 2,
            ..Default::default()
        };
        let (address, stop, server) = serve_on_loopback(limits).await;
        let third_answer = tokio::task::spawn_blocking(move || {
            // Two keep-alive connections take both places; a third is closed unanswered.
            let held: Vec<_> = (0..2)
                .map(|_| {
                    let mut held = std::net::TcpStream::connect(address).unwrap();
                    held.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                        .unwrap();
                    // The answer's first byte says the server took the connection.
                    let mut first = [0u8; 1];
                    std::io::Read::read_exact(&mut held, &mut first).unwrap();
                    held
                })
                .collect();
            let mut third = std::net::TcpStream::connect(address).unwrap();
            let _ = third.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
            let third_answer = read_until_closed(&mut third);
            drop(held);
            third_answer
        })
        .await
        .unwrap();
        assert_eq!(third_answer, "", "over --max-connections");
        let _ = stop.send(());
        server.await.unwrap();
    }

    /// A stream of the chunks a channel receives (ends when the sender is dropped).
    fn tokio_stream_from(
        mut receiver: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
    ) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
        futures::stream::poll_fn(move |context| receiver.poll_recv(context))
    }

    #[tokio::test]
    async fn a_half_sent_request_does_not_hold_the_shutdown() {
        use std::io::{Read as _, Write as _};
        let (address, stop, server) = serve_on_loopback(ServerLimits::default()).await;
        // A whole request is served; then a request whose headers never end is left open.
        let half_sent = tokio::task::spawn_blocking(move || {
            let mut client = std::net::TcpStream::connect(address).unwrap();
            client
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut answer = String::new();
            client.read_to_string(&mut answer).unwrap();
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            let mut slow = std::net::TcpStream::connect(address).unwrap();
            slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            slow
        })
        .await
        .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let _ = stop.send(());
        let ended = tokio::time::timeout(SHUTDOWN_GRACE * 3, server).await;
        assert!(
            ended.is_ok(),
            "the server still waits on the half-sent request"
        );
        // Held open until here: the server had to stop with it still half sent.
        drop(half_sent);
    }
}
