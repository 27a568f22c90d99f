//! `flotilla status`: asks a running agent (`flotilla run`) for `GET /status` and shows it.
//!
//! The agent serves plain HTTP on its pod network or loopback, so only `http://` URLs are
//! accepted. The answer is read as [`crate::status::Status`], the very types the agent
//! serializes, so the two cannot drift apart: fields the agent adds later are ignored by the
//! table and kept by `--output json`.

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use clap::ValueEnum;
use http::Uri;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde_json::Value;

use super::{CliError, Outcome, aligned, write_error};
use crate::apply::ClusterStatus;
use crate::placement::Target;
use crate::status::{ClusterView, Readiness, Status};
use crate::workload::{HealthState, WorkloadHealth};

/// How long the whole request may take: connecting, asking and reading the answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The largest answer read; a `/status` is a few kilobytes per cluster.
const MAX_BODY: usize = 64 << 20;

/// Characters of a commit shown in the table.
const COMMIT_SHOWN: usize = 12;

/// Characters of a reason shown in the table.
const REASON_SHOWN: usize = 300;

/// `flotilla status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The agent's base URL (plain HTTP), as served by `flotilla run --listen`.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "FLOTILLA_SERVER")]
    server: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = StatusFormat::Table, env = "FLOTILLA_OUTPUT")]
    output: StatusFormat,
}

/// Formats of `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusFormat {
    /// A table for people.
    Table,
    /// The agent's answer, pretty-printed.
    Json,
}

/// Exit 0 only for a cluster that is Ready and, when this replica syncs it, synced with no
/// failed object and no Degraded workload.
fn healthy(cluster: &ClusterView) -> bool {
    let ready = cluster.health == Readiness::Ready;
    if !cluster.synced_here {
        return ready;
    }
    ready
        && cluster.status == Some(ClusterStatus::Synced)
        && cluster.failed.is_empty()
        && !cluster
            .workloads
            .values()
            .any(|workload| workload.state == HealthState::Degraded)
}

/// Why the agent could not be asked, or why its answer is not a `/status`.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The request could not be built from the URL.
    #[error("building the request")]
    Request(#[source] http::Error),
    /// Nothing accepted the connection.
    #[error("cannot connect (is `flotilla run` serving there?)")]
    Connect(#[source] hyper_util::client::legacy::Error),
    /// The connection broke before an answer came.
    #[error("request failed")]
    Exchange(#[source] hyper_util::client::legacy::Error),
    /// The answer's body could not be read (or was over [`MAX_BODY`]).
    #[error("reading the answer")]
    Read(#[source] Box<dyn StdError + Send + Sync>),
    /// The agent answered, but not 200.
    #[error("answered HTTP {code}{}", then_text(.body))]
    Http {
        /// The HTTP status.
        code: http::StatusCode,
        /// The answer's text, on one line and shortened.
        body: String,
    },
    /// No whole answer within the timeout.
    #[error("no answer within {:.1} s", .0.as_secs_f64())]
    Timeout(Duration),
    /// The answer is not text.
    #[error("the answer is not UTF-8")]
    NotUtf8(#[source] std::str::Utf8Error),
    /// The answer is not JSON.
    #[error("the answer is not JSON")]
    NotJson(#[source] serde_json::Error),
    /// The answer is JSON, but not an object.
    #[error("the answer is not a JSON object")]
    NotObject,
    /// The answer is a JSON object, but a field of it does not read as `/status` (the path
    /// names the field).
    #[error("the answer is not a flotilla /status")]
    Schema(#[source] serde_path_to_error::Error<serde_json::Error>),
}

/// `: text` after an HTTP status, or nothing for an empty answer.
fn then_text(text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

impl StatusError {
    /// Whether asking again may help: the agent was not there yet, was slow, or failed on its
    /// side (5xx). A 4xx or an answer that is not a `/status` stays so.
    pub fn is_retryable(&self) -> bool {
        match self {
            StatusError::Connect(_) | StatusError::Timeout(_) => true,
            StatusError::Http { code, .. } => code.is_server_error(),
            _ => false,
        }
    }

    /// A fixed name for the kind of error, for logs and labels (never the error's text).
    pub fn kind(&self) -> &'static str {
        match self {
            StatusError::Request(_) => "request",
            StatusError::Connect(_) => "connect",
            StatusError::Exchange(_) => "exchange",
            StatusError::Read(_) => "read",
            StatusError::Http { .. } => "http",
            StatusError::Timeout(_) => "timeout",
            StatusError::NotUtf8(_) => "not_utf8",
            StatusError::NotJson(_) => "not_json",
            StatusError::NotObject => "not_object",
            StatusError::Schema(_) => "schema",
        }
    }

    /// The error and its causes as the user reads them: `context: cause: cause`.
    fn report(&self) -> String {
        let causes = match self {
            // hyper's own text says only `client error (Connect)`; its causes say what happened.
            StatusError::Connect(error) | StatusError::Exchange(error) => causes(error),
            _ => match self.source() {
                Some(source) => crate::error::chain(source),
                None => return self.to_string(),
            },
        };
        format!("{self}: {causes}")
    }
}

/// Runs `flotilla status`.
pub fn status_command(args: StatusArgs, stdout: &mut dyn Write) -> Result<Outcome, CliError> {
    let url = status_url(&args.server)?;
    let runtime = super::runtime()?;
    let answer = runtime.block_on(fetch(&url, TIMEOUT));
    // A name lookup still running after the timeout must not hold the command up.
    runtime.shutdown_background();
    let (value, status) = answer
        .and_then(|body| read_answer(&body))
        .map_err(|error| {
            tracing::debug!(
                kind = error.kind(),
                retryable = error.is_retryable(),
                "Asking the agent failed."
            );
            agent_error(&url, error.report())
        })?;
    let output = match args.output {
        StatusFormat::Json => serde_json::to_string_pretty(&value)
            .map_err(|error| CliError::Serialise(error.to_string()))?,
        StatusFormat::Table => status_table(&status),
    };
    writeln!(stdout, "{}", output.trim_end()).map_err(write_error(&PathBuf::from("(stdout)")))?;
    Ok(outcome(&status))
}

fn agent_error(url: &impl ToString, problem: impl Into<String>) -> CliError {
    CliError::Agent {
        url: url.to_string(),
        problem: problem.into(),
    }
}

/// `{server}/status`, for an `http://` server URL.
fn status_url(server: &str) -> Result<Uri, CliError> {
    let uri: Uri = server
        .parse()
        .map_err(|error| agent_error(&server, format!("not a URL: {error}")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(agent_error(
                &server,
                "https is not supported: the agent serves plain HTTP on its pod network or \
                 loopback; use http://HOST:PORT (e.g. through `kubectl port-forward`)",
            ));
        }
        Some(other) => {
            return Err(agent_error(
                &server,
                format!("unsupported scheme {other:?}: use http://HOST:PORT"),
            ));
        }
        None => {
            return Err(agent_error(&server, "no scheme: use http://HOST:PORT"));
        }
    }
    let authority = uri
        .authority()
        .ok_or_else(|| agent_error(&server, "no host: use http://HOST:PORT"))?
        .clone();
    let path = format!("{}/status", uri.path().trim_end_matches('/'));
    Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(path)
        .build()
        .map_err(|error| agent_error(&server, format!("not a URL: {error}")))
}

/// `GET url` within `timeout`: the body of a 200 answer, or what went wrong.
async fn fetch(url: &Uri, timeout: Duration) -> Result<Bytes, StatusError> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(timeout));
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let request = http::Request::get(url.clone())
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::new())
        .map_err(StatusError::Request)?;
    let exchange = async {
        let response = client.request(request).await.map_err(|error| {
            if error.is_connect() {
                StatusError::Connect(error)
            } else {
                StatusError::Exchange(error)
            }
        })?;
        let code = response.status();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(StatusError::Read)?
            .to_bytes();
        if code != http::StatusCode::OK {
            let text = String::from_utf8_lossy(&body);
            return Err(StatusError::Http {
                code,
                body: shortened(text.trim()),
            });
        }
        Ok(body)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or(Err(StatusError::Timeout(timeout)))
}

/// An error's causes, without the error itself (whose text says only `client error (Connect)`).
fn causes(error: &(dyn StdError + 'static)) -> String {
    match error.source() {
        Some(source) => crate::error::chain(source),
        None => error.to_string(),
    }
}

/// The answer as JSON and as a [`Status`]; an error says why it is not a `/status` answer.
///
/// A field the agent adds later is ignored (and kept by `--output json`), a field it leaves out
/// is empty; a value this `flotilla` does not know (a new state, say) is an error naming the
/// field, since the exit code cannot be decided without it.
fn read_answer(body: &[u8]) -> Result<(Value, Status), StatusError> {
    let text = std::str::from_utf8(body).map_err(StatusError::NotUtf8)?;
    let value: Value = serde_json::from_str(text).map_err(StatusError::NotJson)?;
    if !value.is_object() {
        return Err(StatusError::NotObject);
    }
    let status: Status = serde_path_to_error::deserialize(&value).map_err(StatusError::Schema)?;
    Ok((value, status))
}

/// Exit 0 when every cluster is Ready and every cluster synced here is synced with no failed
/// object and no Degraded workload; 1 otherwise.
fn outcome(status: &Status) -> Outcome {
    if status.clusters.values().all(healthy) {
        Outcome::Success
    } else {
        Outcome::Failed
    }
}

fn short_commit(commit: Option<&str>) -> String {
    commit.map_or_else(|| "-".into(), |c| c.chars().take(COMMIT_SHOWN).collect())
}

/// One line, at most [`REASON_SHOWN`] characters.
fn shortened(reason: &str) -> String {
    let line = reason.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(REASON_SHOWN) {
        Some((cut, _)) => format!(
            "{}... ({} more characters; --output json has them all)",
            &line[..cut],
            line[cut..].chars().count()
        ),
        None => line,
    }
}

/// The text serde gives a unit variant: what `/status` carries, so the table says what the
/// JSON says (`Ready`, `synced`, `Degraded`).
fn variant_name(value: &impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(name)) => name,
        _ => "-".into(),
    }
}

fn shares(shares: &[Target]) -> String {
    if shares.is_empty() {
        return "(none)".into();
    }
    shares
        .iter()
        .map(|share| match share.replicas {
            Some(replicas) => format!("{}={replicas}", share.cluster),
            None => share.cluster.clone(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `2 Available, 1 Degraded`: the states in this order, or `-` for none.
fn workload_counts(workloads: &BTreeMap<String, WorkloadHealth>) -> String {
    let parts: Vec<String> = [
        HealthState::Available,
        HealthState::Progressing,
        HealthState::Degraded,
    ]
    .into_iter()
    .filter_map(|state| {
        let count = workloads.values().filter(|w| w.state == state).count();
        (count > 0).then(|| format!("{count} {}", variant_name(&state)))
    })
    .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

/// Indents every line of an aligned table.
fn indented(table: &str) -> String {
    table.lines().map(|line| format!("  {line}\n")).collect()
}

/// The status as aligned text: a header, one row per cluster, then failovers, clusters'
/// problems, workloads not Available and failed objects.
fn status_table(status: &Status) -> String {
    let mut header = vec![
        [
            "commit:".to_string(),
            short_commit(status.commit.as_deref()),
        ],
        [
            "ready:".to_string(),
            if status.ready { "yes" } else { "no" }.to_string(),
        ],
    ];
    if let Some(replica) = &status.replica {
        header.push(["replica:".into(), replica.clone()]);
    }
    if let Some(shards) = &status.shards {
        let shards: Vec<String> = shards.iter().map(u32::to_string).collect();
        header.push([
            "shards:".into(),
            if shards.is_empty() {
                "(none)".into()
            } else {
                shards.join(", ")
            },
        ]);
    }
    if let Some(error) = &status.error {
        header.push(["error:".into(), shortened(error)]);
    }
    for error in &status.resource_errors {
        header.push(["resource error:".into(), shortened(error)]);
    }
    let mut out = aligned(&header);
    out.push('\n');

    if status.clusters.is_empty() {
        out.push_str("no clusters\n");
    } else {
        let mut rows = vec![
            [
                "CLUSTER",
                "HEALTH",
                "SYNCED HERE",
                "STATUS",
                "COMMIT",
                "APPLIED/UNCHANGED/PRUNED",
                "FAILED",
                "WORKLOADS",
            ]
            .map(String::from),
        ];
        for (name, cluster) in &status.clusters {
            let synced = cluster.status.is_some();
            rows.push([
                name.clone(),
                variant_name(&cluster.health),
                if cluster.synced_here { "yes" } else { "no" }.into(),
                cluster
                    .status
                    .as_ref()
                    .map_or_else(|| "-".into(), variant_name),
                short_commit(cluster.commit.as_deref()),
                if synced {
                    format!(
                        "{}/{}/{}",
                        cluster.applied, cluster.unchanged, cluster.pruned
                    )
                } else {
                    "-".into()
                },
                if synced {
                    cluster.failed.len().to_string()
                } else {
                    "-".into()
                },
                workload_counts(&cluster.workloads),
            ]);
        }
        out.push_str(&aligned(&rows));
    }

    if !status.failovers.is_empty() {
        out.push_str("\nFailovers:\n");
        for failover in &status.failovers {
            let unavailable: Vec<String> = failover
                .unavailable
                .iter()
                .map(|(cluster, reason)| format!("{cluster} NotReady ({})", shortened(reason)))
                .collect();
            out.push_str(&format!(
                "  {}: {} -> now {}, planned {}\n",
                failover.resource,
                unavailable.join(", "),
                shares(&failover.targets),
                shares(&failover.planned)
            ));
        }
    }

    let mut problems = Vec::new();
    for (name, cluster) in &status.clusters {
        if cluster.health != Readiness::Ready {
            problems.push(format!(
                "  {name}: {}{}\n",
                variant_name(&cluster.health),
                cluster
                    .health_reason
                    .as_deref()
                    .map(|reason| format!(": {}", shortened(reason)))
                    .unwrap_or_default()
            ));
        }
        if let Some(error) = &cluster.error {
            problems.push(format!("  {name}: sync failed: {}\n", shortened(error)));
        } else if cluster.synced_here && cluster.status.is_none() {
            problems.push(format!("  {name}: not synced yet\n"));
        }
    }
    if !problems.is_empty() {
        out.push_str("\nClusters:\n");
        out.push_str(&problems.concat());
    }

    let mut workloads = vec![["CLUSTER", "WORKLOAD", "STATE", "REASON"].map(String::from)];
    let rank = |state: HealthState| match state {
        HealthState::Degraded => 0,
        HealthState::Progressing => 1,
        HealthState::Available => 2,
    };
    let mut unavailable: Vec<(&String, &String, &WorkloadHealth)> = status
        .clusters
        .iter()
        .flat_map(|(name, cluster)| {
            cluster
                .workloads
                .iter()
                .filter(|(_, workload)| workload.state != HealthState::Available)
                .map(move |(object, workload)| (name, object, workload))
        })
        .collect();
    unavailable.sort_by_key(|(_, _, workload)| rank(workload.state));
    for (cluster, object, workload) in unavailable {
        workloads.push([
            cluster.clone(),
            object.clone(),
            variant_name(&workload.state),
            shortened(&workload.reason),
        ]);
    }
    if workloads.len() > 1 {
        out.push_str("\nWorkloads not Available:\n");
        out.push_str(&indented(&aligned(&workloads)));
    }

    let mut failed = vec![["CLUSTER", "OBJECT", "REASON"].map(String::from)];
    for (name, cluster) in &status.clusters {
        for problem in &cluster.failed {
            failed.push([
                name.clone(),
                problem.object.to_string(),
                shortened(&problem.reason),
            ]);
        }
    }
    if failed.len() > 1 {
        out.push_str("\nFailed objects:\n");
        out.push_str(&indented(&aligned(&failed)));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write as _};
    use std::net::TcpListener;

    use super::*;

    const HEALTHY: &str = r#"{
        "commit": "0123456789abcdef0123456789abcdef01234567",
        "ready": true,
        "clusters": {
            "one": {
                "health": "Ready", "synced_here": true, "status": "synced",
                "commit": "0123456789abcdef0123456789abcdef01234567",
                "applied": 2, "unchanged": 10, "pruned": 1, "failed": [],
                "last_sync": 1700000000.5, "last_success": 1700000000.5, "drift": [],
                "workloads": {
                    "Deployment.apps web/nginx": {"state": "Available", "reason": "3/3 replicas available"},
                    "Deployment.apps web/api": {"state": "Available", "reason": "2/2 replicas available"}
                }
            },
            "two": {
                "health": "Ready", "synced_here": false,
                "applied": 0, "unchanged": 0, "pruned": 0, "failed": [], "drift": [],
                "workloads": {},
                "added_later": {"x": 1}
            }
        },
        "also_added_later": [1, 2]
    }"#;

    const FAILOVER: &str = r#"{
        "commit": "fedcba9876543210fedcba9876543210fedcba98",
        "ready": true,
        "replica": "flotilla-0",
        "shards": [0, 2],
        "failovers": [{
            "resource": "Deployment.apps web/nginx",
            "unavailable": {"two": "3 /readyz probes failed: connection refused"},
            "targets": [{"cluster": "one", "replicas": 6}],
            "planned": [{"cluster": "one", "replicas": 3}, {"cluster": "two", "replicas": 3}]
        }],
        "clusters": {
            "one": {
                "health": "Ready", "synced_here": true, "status": "synced",
                "commit": "fedcba9876543210fedcba9876543210fedcba98",
                "applied": 1, "unchanged": 5, "pruned": 0, "failed": [], "drift": [],
                "workloads": {
                    "Deployment.apps web/nginx": {"state": "Progressing", "reason": "4/6 replicas available"}
                }
            },
            "two": {
                "health": "NotReady",
                "health_reason": "3 /readyz probes failed: connection refused",
                "synced_here": true, "status": "failed",
                "error": "connecting: connection refused",
                "applied": 0, "unchanged": 0, "pruned": 0, "failed": [], "drift": [],
                "workloads": {}
            }
        }
    }"#;

    const DEGRADED_WORKLOAD: &str = r#"{
        "commit": "0123456789abcdef0123456789abcdef01234567",
        "ready": true,
        "clusters": {
            "one": {
                "health": "Ready", "synced_here": true, "status": "degraded",
                "commit": "0123456789abcdef0123456789abcdef01234567",
                "applied": 3, "unchanged": 0, "pruned": 0,
                "failed": [{
                    "object": {"group": "", "version": "v1", "kind": "ConfigMap", "namespace": "web", "name": "settings"},
                    "reason": "admission webhook denied\nthe request"
                }],
                "drift": [],
                "workloads": {
                    "Deployment.apps web/nginx": {"state": "Available", "reason": "3/3 replicas available"},
                    "Deployment.apps web/api": {"state": "Available", "reason": "2/2 replicas available"},
                    "Deployment.apps web/worker": {"state": "Degraded", "reason": "ProgressDeadlineExceeded: ReplicaSet has timed out progressing"}
                }
            }
        }
    }"#;

    fn parse(text: &str) -> Status {
        read_answer(text.as_bytes()).unwrap().1
    }

    #[test]
    fn healthy_fleet_succeeds_with_an_aligned_table() {
        let status = parse(HEALTHY);
        assert_eq!(outcome(&status), Outcome::Success);
        let table = status_table(&status);
        assert_eq!(
            table,
            "commit:  0123456789ab\n\
             ready:   yes\n\
             \n\
             CLUSTER  HEALTH  SYNCED HERE  STATUS  COMMIT        APPLIED/UNCHANGED/PRUNED  FAILED  WORKLOADS\n\
             one      Ready   yes          synced  0123456789ab  2/10/1                    0       2 Available\n\
             two      Ready   no           -       -             -                         -       -\n"
        );
    }

    #[test]
    fn not_ready_cluster_fails_and_shows_the_failover() {
        let status = parse(FAILOVER);
        assert_eq!(outcome(&status), Outcome::Failed);
        let table = status_table(&status);
        assert!(table.contains("replica:  flotilla-0\n"), "{table}");
        assert!(table.contains("shards:   0, 2\n"), "{table}");
        assert!(
            table.contains("two      NotReady  yes          failed  -             0/0/0"),
            "{table}"
        );
        assert!(
            table.contains(
                "Failovers:\n  Deployment.apps web/nginx: two NotReady (3 /readyz probes failed: \
                 connection refused) -> now one=6, planned one=3 two=3\n"
            ),
            "{table}"
        );
        assert!(
            table.contains("  two: NotReady: 3 /readyz probes failed: connection refused\n"),
            "{table}"
        );
        assert!(
            table.contains("  two: sync failed: connecting: connection refused\n"),
            "{table}"
        );
        assert!(
            table.contains(
                "Workloads not Available:\n  CLUSTER  WORKLOAD                   STATE        REASON\n  \
                 one      Deployment.apps web/nginx  Progressing  4/6 replicas available\n"
            ),
            "{table}"
        );
    }

    #[test]
    fn ready_cluster_not_synced_here_only_needs_to_be_ready() {
        let mut status = parse(HEALTHY);
        assert_eq!(outcome(&status), Outcome::Success);
        if let Some(two) = status.clusters.get_mut("two") {
            two.health = Readiness::NotReady;
        }
        assert_eq!(outcome(&status), Outcome::Failed);
    }

    #[test]
    fn degraded_workload_and_failed_object_fail() {
        let status = parse(DEGRADED_WORKLOAD);
        assert_eq!(outcome(&status), Outcome::Failed);
        let table = status_table(&status);
        assert!(table.contains("2 Available, 1 Degraded"), "{table}");
        assert!(
            table.contains(
                "  one      Deployment.apps web/worker  Degraded  ProgressDeadlineExceeded: \
                 ReplicaSet has timed out progressing\n"
            ),
            "{table}"
        );
        assert!(
            table.ends_with(
                "Failed objects:\n  CLUSTER  OBJECT                  REASON\n  \
                 one      ConfigMap web/settings  admission webhook denied the request\n"
            ),
            "{table}"
        );

        // A Degraded workload alone fails too, even when the sync itself went through.
        let mut status = parse(DEGRADED_WORKLOAD);
        if let Some(one) = status.clusters.get_mut("one") {
            one.status = Some(ClusterStatus::Synced);
            one.failed.clear();
        }
        assert_eq!(outcome(&status), Outcome::Failed);
    }

    /// A `/status` as the agent builds it, in Rust: a failover, a failed object, a Degraded
    /// workload and a drift. Serialized and read back, it gives the table and the exit code, so
    /// the agent's side and this one cannot drift apart.
    fn status_built_in_rust() -> Status {
        use crate::apply::ObjectProblem;
        use crate::drift::Drift;
        use crate::object::ObjectRef;
        use crate::status::{DriftView, FailoverView};

        let object = |group: &str, kind: &str, name: &str| ObjectRef {
            group: group.into(),
            version: "v1".into(),
            kind: kind.into(),
            namespace: "web".into(),
            name: name.into(),
        };
        let workload = |state, reason: &str| WorkloadHealth {
            state,
            reason: reason.into(),
        };
        let commit = "89abcdef0123456789abcdef0123456789abcdef".to_string();
        let one = ClusterView {
            health: Readiness::Ready,
            synced_here: true,
            status: Some(ClusterStatus::Degraded),
            commit: Some(commit.clone()),
            applied: 4,
            unchanged: 1,
            pruned: 2,
            failed: vec![ObjectProblem {
                object: object("", "ConfigMap", "settings"),
                reason: "admission webhook denied the request".into(),
                retryable: false,
            }],
            last_sync: Some(1_700_000_000.0),
            drift: vec![DriftView {
                drift: Drift {
                    cluster: "one".into(),
                    object: object("apps", "Deployment", "nginx"),
                    fields: vec![".spec.replicas".into()],
                    deleted: false,
                    managers: vec!["kubectl-scale".into()],
                    report_only: false,
                    replicas_seen: None,
                    note: None,
                },
                corrected: true,
                seen: 1_700_000_001.0,
            }],
            workloads: BTreeMap::from([
                (
                    "Deployment.apps web/nginx".to_string(),
                    workload(HealthState::Available, "6/6 replicas available"),
                ),
                (
                    "Deployment.apps web/worker".to_string(),
                    workload(HealthState::Degraded, "ProgressDeadlineExceeded: timed out"),
                ),
            ]),
            ..Default::default()
        };
        let two = ClusterView {
            health: Readiness::NotReady,
            health_reason: Some("3 /readyz probes failed: connection refused".into()),
            synced_here: true,
            status: Some(ClusterStatus::Failed),
            error: Some("connecting: connection refused".into()),
            ..Default::default()
        };
        let target = |cluster: &str, replicas| Target {
            cluster: cluster.into(),
            replicas: Some(replicas),
        };
        Status {
            commit: Some(commit),
            ready: true,
            failovers: vec![FailoverView {
                resource: "Deployment.apps web/nginx".into(),
                unavailable: BTreeMap::from([(
                    "two".to_string(),
                    "3 /readyz probes failed: connection refused".to_string(),
                )]),
                targets: vec![target("one", 6)],
                planned: vec![target("one", 3), target("two", 3)],
            }],
            clusters: BTreeMap::from([("one".to_string(), one), ("two".to_string(), two)]),
            ..Default::default()
        }
    }

    #[test]
    fn a_status_serialized_by_the_agent_reads_back_into_the_table() {
        let sent = status_built_in_rust();
        let body = serde_json::to_vec(&sent).unwrap();
        let (value, status) = read_answer(&body).unwrap();
        // Nothing is lost on the way: what the CLI read serializes to what the agent sent.
        assert_eq!(serde_json::to_value(&status).unwrap(), value);
        assert_eq!(outcome(&status), Outcome::Failed);
        let table = status_table(&status);
        assert_eq!(
            table,
            "commit:  89abcdef0123\n\
             ready:   yes\n\
             \n\
             CLUSTER  HEALTH    SYNCED HERE  STATUS    COMMIT        APPLIED/UNCHANGED/PRUNED  FAILED  WORKLOADS\n\
             one      Ready     yes          degraded  89abcdef0123  4/1/2                     1       1 Available, 1 Degraded\n\
             two      NotReady  yes          failed    -             0/0/0                     0       -\n\
             \n\
             Failovers:\n  \
             Deployment.apps web/nginx: two NotReady (3 /readyz probes failed: connection refused) -> now one=6, planned one=3 two=3\n\
             \n\
             Clusters:\n  \
             two: NotReady: 3 /readyz probes failed: connection refused\n  \
             two: sync failed: connecting: connection refused\n\
             \n\
             Workloads not Available:\n  \
             CLUSTER  WORKLOAD                    STATE     REASON\n  \
             one      Deployment.apps web/worker  Degraded  ProgressDeadlineExceeded: timed out\n\
             \n\
             Failed objects:\n  \
             CLUSTER  OBJECT                  REASON\n  \
             one      ConfigMap web/settings  admission webhook denied the request\n"
        );

        // Mended, the same status succeeds: the exit code follows the typed fields.
        let mut mended = status;
        mended.failovers.clear();
        mended.clusters.remove("two");
        if let Some(one) = mended.clusters.get_mut("one") {
            one.status = Some(ClusterStatus::Synced);
            one.failed.clear();
            one.workloads
                .retain(|_, workload| workload.state != HealthState::Degraded);
        }
        assert_eq!(outcome(&mended), Outcome::Success);
    }

    #[test]
    fn a_value_this_flotilla_does_not_know_is_an_error_naming_the_field() {
        // A newer agent with a workload state this CLI has no rule for: the exit code cannot be
        // decided, so the answer is refused, naming where the value is.
        let newer = HEALTHY.replace(
            r#""state": "Available", "reason": "3/3"#,
            r#""state": "Hibernating", "reason": "3/3"#,
        );
        assert_ne!(newer, HEALTHY);
        let error = read_answer(newer.as_bytes()).unwrap_err();
        assert_eq!(error.kind(), "schema");
        assert!(!error.is_retryable());
        let text = error.report();
        assert!(
            text.starts_with(
                "the answer is not a flotilla /status: \
                 clusters.one.workloads.Deployment.apps web/nginx.state: unknown variant `Hibernating`"
            ),
            "{text}"
        );
    }

    #[test]
    fn errors_say_whether_asking_again_can_help() {
        let http = |code: u16| StatusError::Http {
            code: http::StatusCode::from_u16(code).unwrap(),
            body: String::new(),
        };
        assert!(http(503).is_retryable());
        assert!(!http(404).is_retryable());
        assert_eq!(http(503).kind(), "http");
        assert_eq!(http(404).to_string(), "answered HTTP 404 Not Found");
        let timeout = StatusError::Timeout(Duration::from_secs(5));
        assert!(timeout.is_retryable());
        assert_eq!(timeout.kind(), "timeout");
        assert!(!StatusError::NotObject.is_retryable());
        assert_eq!(
            read_answer(b"[]").unwrap_err().report(),
            "the answer is not a JSON object"
        );
    }

    #[test]
    fn urls() {
        assert_eq!(
            status_url("http://127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080/status"
        );
        assert_eq!(
            status_url("http://agent.flotilla-system:8080/").unwrap(),
            "http://agent.flotilla-system:8080/status"
        );
        let https = status_url("https://agent:8080").unwrap_err().to_string();
        assert!(
            https.starts_with("https://agent:8080: https is not supported"),
            "{https}"
        );
        assert!(status_url("127.0.0.1:8080").is_err());
    }

    fn run(server: &str, output: StatusFormat) -> (Result<Outcome, CliError>, String) {
        let mut stdout = Vec::new();
        let result = status_command(
            StatusArgs {
                server: server.into(),
                output,
            },
            &mut stdout,
        );
        (result, String::from_utf8(stdout).unwrap())
    }

    /// Answers one request with `response` on a loopback port; returns the server URL.
    fn serve_once(response: String) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            if let Ok((mut stream, _)) = listener.accept() {
                let mut request = Vec::new();
                let mut buffer = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                assert!(request.starts_with(b"GET /status HTTP/1.1\r\n"));
                let _ = stream.write_all(response.as_bytes());
            }
        });
        format!("http://127.0.0.1:{port}")
    }

    fn http_response(code: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {code}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    #[test]
    fn reads_a_running_agent() {
        let value = serde_json::from_str::<Value>(HEALTHY).unwrap();
        let compact = serde_json::to_string(&value).unwrap();
        let server = serve_once(http_response("200 OK", &compact));
        let (result, stdout) = run(&server, StatusFormat::Json);
        assert_eq!(result.unwrap(), Outcome::Success);
        assert_eq!(stdout, serde_json::to_string_pretty(&value).unwrap() + "\n");

        let server = serve_once(http_response("200 OK", DEGRADED_WORKLOAD));
        let (result, stdout) = run(&server, StatusFormat::Table);
        assert_eq!(result.unwrap(), Outcome::Failed);
        assert!(stdout.contains("Failed objects:"), "{stdout}");
    }

    #[test]
    fn bad_answers_are_errors_naming_the_url() {
        let server = serve_once(http_response("500 Internal Server Error", "boom"));
        let error = run(&server, StatusFormat::Table).0.unwrap_err().to_string();
        assert_eq!(
            error,
            format!("{server}/status: answered HTTP 500 Internal Server Error: boom")
        );

        let server = serve_once(http_response("200 OK", "<html>"));
        let error = run(&server, StatusFormat::Json).0.unwrap_err().to_string();
        assert!(
            error.starts_with(&format!("{server}/status: the answer is not JSON")),
            "{error}"
        );

        let server = serve_once(http_response("200 OK", r#"{"clusters": []}"#));
        let error = run(&server, StatusFormat::Table).0.unwrap_err().to_string();
        assert!(
            error.contains("the answer is not a flotilla /status: clusters"),
            "{error}"
        );
    }

    #[test]
    fn silent_agent_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url: Uri = format!("http://{}/status", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let runtime = super::super::runtime().unwrap();
        // The listener accepts (the kernel's backlog) and never answers: only the timeout ends
        // the wait, and its error says so.
        let error = runtime
            .block_on(fetch(&url, Duration::from_millis(200)))
            .unwrap_err();
        assert_eq!(error.to_string(), "no answer within 0.2 s");
        assert!(matches!(error, StatusError::Timeout(_)), "{error:?}");
        assert!(error.is_retryable());
        drop(listener);
    }

    #[test]
    fn unreachable_agent_is_an_error_naming_the_url() {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let server = format!("http://127.0.0.1:{port}");
        let (result, stdout) = run(&server, StatusFormat::Table);
        let error = result.unwrap_err();
        assert!(matches!(error, CliError::Agent { .. }), "{error:?}");
        let text = error.to_string();
        assert!(
            text.starts_with(&format!("{server}/status: cannot connect")),
            "{text}"
        );
        assert!(stdout.is_empty());
    }

    #[test]
    fn a_refused_connection_is_retryable_and_shows_its_causes() {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let url: Uri = format!("http://127.0.0.1:{port}/status").parse().unwrap();
        let runtime = super::super::runtime().unwrap();
        let error = runtime
            .block_on(fetch(&url, Duration::from_secs(30)))
            .unwrap_err();
        assert!(matches!(error, StatusError::Connect(_)), "{error:?}");
        assert!(error.is_retryable());
        assert_eq!(error.kind(), "connect");
        let text = error.report();
        // hyper's own `client error (Connect)` is left out; what it wraps is shown.
        assert!(
            text.starts_with("cannot connect (is `flotilla run` serving there?): ")
                && !text.contains("client error"),
            "{text}"
        );
    }
}
