//! The server's tests.

use axum::body::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::*;

/// `sha256=<hex>` of HMAC-SHA256(secret, body), as GitHub signs a delivery.
pub(super) fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    format!(
        "sha256={}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

mod routes;

/// The agent's side of an [`AgentLink`], as the tests hold it.
struct Shared {
    status: watch::Sender<Status>,
    trigger: Arc<Notify>,
    metrics: Arc<Metrics>,
}

impl Shared {
    /// The link the router gets.
    fn link(&self) -> AgentLink {
        AgentLink {
            status: self.status.subscribe(),
            trigger: self.trigger.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// A fresh agent state: not ready, no trigger pending, metrics at zero.
fn test_shared() -> Arc<Shared> {
    Arc::new(Shared {
        status: watch::Sender::new(Status::default()),
        trigger: Default::default(),
        metrics: Arc::new(Metrics::new().unwrap()),
    })
}

/// What wakes the agent's loop.
fn trigger(shared: &Shared) -> &Notify {
    &shared.trigger
}

/// Replaces the status the routes read.
async fn set_status(shared: &Shared, status: Status) {
    shared.status.send_replace(status);
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
    let app = router(
        shared.link(),
        secrets,
        Some("refs/heads/main".into()),
        &limits,
    );
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
        test_shared().link(),
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
    let app = router(
        test_shared().link(),
        WebhookSecrets::default(),
        None,
        &limits,
    );
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
