//! One test per route, through `router()` and `oneshot`, pinning what each answers and whether
//! it wakes the reconcile loop.

use axum::body::Body;
use axum::http::Request;
use futures::FutureExt as _;
use tower::ServiceExt as _;

use super::*;
use crate::apply::{ClusterStatus, ObjectProblem};
use crate::object::ObjectRef;
use crate::status::{ClusterView, Readiness, Status};
use crate::workload::{HealthState, WorkloadHealth};

/// Every receiver served, tracking `refs/heads/main`, and the agent state behind them.
fn hooks_app() -> (Arc<Shared>, Router) {
    let shared = test_shared();
    let secrets = WebhookSecrets {
        github: Some(b"secret".to_vec()),
        gitlab: Some(b"gitlab-token".to_vec()),
        generic: Some(b"token".to_vec()),
    };
    let app = router(
        shared.link(),
        secrets,
        Some("refs/heads/main".into()),
        &ServerLimits::default(),
    );
    (shared, app)
}

/// What a request was answered: status, content type and body.
struct Answer {
    code: StatusCode,
    content_type: String,
    body: String,
}

async fn send(app: &Router, request: Request<Body>) -> Answer {
    let response = app.clone().oneshot(request).await.unwrap();
    let code = response.status();
    let content_type = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .map(|value| value.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    Answer {
        code,
        content_type,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

/// Sends `request` and says whether it woke the loop. The `notified()` future is made before
/// the request, so it sees a trigger sent while the request is served whether that trigger
/// wakes one waiter or all; polled once afterwards, it is ready exactly when the handler
/// triggered (no waiting, no timing).
async fn send_and_see_trigger(
    shared: &Shared,
    app: &Router,
    request: Request<Body>,
) -> (StatusCode, String, bool) {
    let notified = trigger(shared).notified();
    let answer = send(app, request).await;
    (answer.code, answer.body, notified.now_or_never().is_some())
}

/// What a receiver answers and whether it woke the loop.
type Expected = (StatusCode, &'static str, bool);

const UNAUTHORIZED: Expected = (StatusCode::UNAUTHORIZED, "bad signature or token\n", false);
const PONG: Expected = (StatusCode::OK, "pong\n", false);
const NOT_A_PUSH: Expected = (StatusCode::ACCEPTED, "not a push; ignored\n", false);
const OTHER_REF: Expected = (
    StatusCode::ACCEPTED,
    "not the tracked ref; ignored\n",
    false,
);
const DUPLICATE: Expected = (StatusCode::OK, "duplicate delivery ignored\n", false);
const TRIGGERED: Expected = (StatusCode::ACCEPTED, "sync triggered\n", true);
const NOT_SERVED: Expected = (StatusCode::NOT_FOUND, "", false);

/// Sends each request in turn (the receivers remember deliveries, so order matters) and
/// checks its answer and whether it triggered.
async fn expect<const N: usize>(
    shared: &Shared,
    app: &Router,
    cases: [(Request<Body>, Expected); N],
) {
    for (index, (request, (code, body, triggered))) in cases.into_iter().enumerate() {
        let answer = send_and_see_trigger(shared, app, request).await;
        assert_eq!(
            answer,
            (code, body.to_string(), triggered),
            "request {index}"
        );
    }
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

/// A GitHub delivery: `event`, signed with `secret`.
fn github(event: &str, secret: &[u8], body: &str) -> Request<Body> {
    Request::post("/hooks/github")
        .header("x-github-event", event)
        .header("x-hub-signature-256", sign(secret, body.as_bytes()))
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// A GitLab delivery: `event`, with `token`.
fn gitlab(event: &str, token: &str, body: &str) -> Request<Body> {
    Request::post("/hooks/gitlab")
        .header("x-gitlab-event", event)
        .header("x-gitlab-token", token)
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// A generic delivery with these headers.
fn generic(headers: &[(&str, &str)], body: &str) -> Request<Body> {
    let mut request = Request::post("/hooks/generic");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Body::from(body.to_string())).unwrap()
}

const MAIN: &str = r#"{"ref":"refs/heads/main","after":"0123"}"#;
const DEV: &str = r#"{"ref":"refs/heads/dev","after":"4567"}"#;

#[tokio::test]
async fn healthz_answers_ok() {
    let (_, app) = hooks_app();
    let answer = send(&app, get("/healthz")).await;
    assert_eq!((answer.code, answer.body.as_str()), (StatusCode::OK, "ok"));
}

#[tokio::test]
async fn readyz_is_503_with_the_reason_until_the_status_is_ready() {
    let (shared, app) = hooks_app();
    let answer = send(&app, get("/readyz")).await;
    assert_eq!(answer.code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        answer.body,
        "not ready: no sync has succeeded on every cluster yet\n"
    );

    set_status(
        &shared,
        Status {
            error: Some("render: kustomization.yaml:3: resources: not found".into()),
            ..Default::default()
        },
    )
    .await;
    let answer = send(&app, get("/readyz")).await;
    assert_eq!(answer.code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        answer.body,
        "not ready: render: kustomization.yaml:3: resources: not found\n"
    );

    set_status(
        &shared,
        Status {
            ready: true,
            ..Default::default()
        },
    )
    .await;
    let answer = send(&app, get("/readyz")).await;
    assert_eq!(
        (answer.code, answer.body.as_str()),
        (StatusCode::OK, "ready\n")
    );
}

#[tokio::test]
async fn status_serves_the_current_status_as_json_that_reads_back() {
    let (shared, app) = hooks_app();
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let cluster = ClusterView {
        health: Readiness::Ready,
        synced_here: true,
        status: Some(ClusterStatus::Degraded),
        commit: Some(commit.into()),
        applied: 3,
        failed: vec![ObjectProblem {
            object: ObjectRef {
                group: String::new(),
                version: "v1".into(),
                kind: "ConfigMap".into(),
                namespace: "web".into(),
                name: "settings".into(),
            },
            reason: "refused".into(),
            retryable: false,
        }],
        workloads: [(
            "Deployment.apps web/nginx".to_string(),
            WorkloadHealth {
                state: HealthState::Progressing,
                reason: "1/3 replicas available".into(),
            },
        )]
        .into(),
        ..Default::default()
    };
    let sent = Status {
        commit: Some(commit.into()),
        ready: true,
        clusters: [("one".to_string(), cluster)].into(),
        ..Default::default()
    };
    set_status(&shared, sent.clone()).await;

    let answer = send(&app, get("/status")).await;
    assert_eq!(answer.code, StatusCode::OK);
    assert_eq!(answer.content_type, "application/json");
    let read: Status = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(read.commit.as_deref(), Some(commit));
    assert!(read.ready);
    let one = &read.clusters["one"];
    assert_eq!(one.status, Some(ClusterStatus::Degraded));
    assert_eq!(one.applied, 3);
    assert_eq!(one.failed[0].object.to_string(), "ConfigMap web/settings");
    assert_eq!(
        one.workloads["Deployment.apps web/nginx"].state,
        HealthState::Progressing
    );
    // And nothing else is lost or added on the way.
    assert_eq!(
        serde_json::to_value(&read).unwrap(),
        serde_json::to_value(&sent).unwrap()
    );
}

#[tokio::test]
async fn metrics_are_prometheus_text_counting_webhook_requests() {
    let (_, app) = hooks_app();
    send(&app, github("push", b"wrong", MAIN)).await;
    let answer = send(&app, get("/metrics")).await;
    assert_eq!(answer.code, StatusCode::OK);
    assert_eq!(answer.content_type, "text/plain; version=0.0.4");
    assert!(
        answer.body.contains(
            "flotilla_webhook_requests_total{provider=\"github\",result=\"unauthorized\"} 1\n"
        ),
        "{}",
        answer.body
    );
    assert!(
        answer.body.contains("\nflotilla_shards_held 0\n"),
        "{}",
        answer.body
    );
}

#[tokio::test]
async fn github_triggers_only_for_a_signed_push_to_the_tracked_ref() {
    let (shared, app) = hooks_app();
    let cases = [
        (github("push", b"wrong", MAIN), UNAUTHORIZED),
        (
            Request::post("/hooks/github")
                .header("x-github-event", "push")
                .body(Body::from(MAIN))
                .unwrap(),
            UNAUTHORIZED,
        ),
        (
            github("ping", b"secret", r#"{"zen":"Keep it simple."}"#),
            PONG,
        ),
        (github("issues", b"secret", MAIN), NOT_A_PUSH),
        (github("push", b"secret", DEV), OTHER_REF),
        (github("push", b"secret", r#"{"zen":"no ref"}"#), OTHER_REF),
        (github("push", b"secret", MAIN), TRIGGERED),
        // The same signed body again is the same delivery.
        (github("push", b"secret", MAIN), DUPLICATE),
    ];
    expect(&shared, &app, cases).await;
}

#[tokio::test]
async fn gitlab_triggers_only_for_a_push_with_the_token_to_the_tracked_ref() {
    let (shared, app) = hooks_app();
    let cases = [
        (gitlab("Push Hook", "wrong", MAIN), UNAUTHORIZED),
        (
            Request::post("/hooks/gitlab")
                .header("x-gitlab-event", "Push Hook")
                .body(Body::from(MAIN))
                .unwrap(),
            UNAUTHORIZED,
        ),
        (
            gitlab("Merge Request Hook", "gitlab-token", MAIN),
            NOT_A_PUSH,
        ),
        (gitlab("Push Hook", "gitlab-token", DEV), OTHER_REF),
        (
            gitlab("Tag Push Hook", "gitlab-token", r#"{"ref":"refs/tags/v1"}"#),
            OTHER_REF,
        ),
        (gitlab("Push Hook", "gitlab-token", MAIN), TRIGGERED),
        (gitlab("Push Hook", "gitlab-token", MAIN), DUPLICATE),
    ];
    expect(&shared, &app, cases).await;
}

#[tokio::test]
async fn generic_triggers_for_its_token_or_signature_whatever_the_body() {
    let (shared, app) = hooks_app();
    let signed = sign(b"token", DEV.as_bytes());
    let cases = [
        (generic(&[], MAIN), UNAUTHORIZED),
        (
            generic(&[("authorization", "Bearer wrong")], MAIN),
            UNAUTHORIZED,
        ),
        (generic(&[("authorization", "token")], MAIN), UNAUTHORIZED),
        (
            generic(&[("x-signature-256", &sign(b"wrong", DEV.as_bytes()))], DEV),
            UNAUTHORIZED,
        ),
        (generic(&[("authorization", "Bearer token")], ""), TRIGGERED),
        // Neither the ref nor a repeat matters to the generic receiver.
        (generic(&[("authorization", "Bearer token")], ""), TRIGGERED),
        (generic(&[("x-signature-256", &signed)], DEV), TRIGGERED),
    ];
    expect(&shared, &app, cases).await;
}

#[tokio::test]
async fn a_receiver_without_its_secret_is_not_served() {
    let shared = test_shared();
    let app = router(
        shared.link(),
        WebhookSecrets::default(),
        Some("refs/heads/main".into()),
        &ServerLimits::default(),
    );
    let cases = [
        (github("push", b"secret", MAIN), NOT_SERVED),
        (gitlab("Push Hook", "gitlab-token", MAIN), NOT_SERVED),
        (
            generic(&[("authorization", "Bearer token")], MAIN),
            NOT_SERVED,
        ),
    ];
    expect(&shared, &app, cases).await;
}

#[tokio::test]
async fn a_pinned_commit_is_moved_by_no_push() {
    let shared = test_shared();
    let secrets = WebhookSecrets {
        github: Some(b"secret".to_vec()),
        ..Default::default()
    };
    let app = router(shared.link(), secrets, None, &ServerLimits::default());
    expect(
        &shared,
        &app,
        [(github("push", b"secret", MAIN), OTHER_REF)],
    )
    .await;
}
