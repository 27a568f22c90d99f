//! `flotilla status`: asks a running agent (`flotilla run`) for `GET /status` and shows it.
//!
//! The agent serves plain HTTP on its pod network or loopback, so only `http://` URLs are
//! accepted. The answer is read leniently: fields the agent adds later are ignored by the
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
use serde::Deserialize;
use serde_json::Value;

use super::{CliError, Outcome, aligned, write_error};

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

/// The agent's `/status`, as far as the table needs it (see `crate::agent::Status`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct AgentStatus {
    commit: Option<String>,
    ready: bool,
    error: Option<String>,
    resource_errors: Vec<String>,
    replica: Option<String>,
    shards: Option<Vec<u32>>,
    failovers: Vec<Failover>,
    clusters: BTreeMap<String, ClusterState>,
}

/// A failover (`crate::agent::FailoverView`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Failover {
    resource: String,
    unavailable: BTreeMap<String, String>,
    targets: Vec<Share>,
    planned: Vec<Share>,
}

/// One cluster's share of a resource (`crate::placement::Target`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Share {
    cluster: String,
    replicas: Option<u64>,
}

/// One cluster (`crate::agent::ClusterView`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ClusterState {
    health: Option<String>,
    health_reason: Option<String>,
    synced_here: Option<bool>,
    status: Option<String>,
    commit: Option<String>,
    error: Option<String>,
    applied: usize,
    unchanged: usize,
    pruned: usize,
    failed: Vec<Problem>,
    workloads: BTreeMap<String, Workload>,
}

/// An object that failed (`crate::apply::ObjectProblem`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Problem {
    object: Value,
    reason: String,
}

/// A workload's health (`crate::workload::WorkloadHealth`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Workload {
    state: String,
    reason: String,
}

const READY: &str = "Ready";
const SYNCED: &str = "synced";
const AVAILABLE: &str = "Available";
const PROGRESSING: &str = "Progressing";
const DEGRADED: &str = "Degraded";

impl ClusterState {
    /// Whether this replica syncs the cluster; an agent that does not say syncs them all.
    fn syncs_here(&self) -> bool {
        self.synced_here.unwrap_or(true)
    }

    /// Ready and, when synced here, synced with no failed object and no Degraded workload.
    fn healthy(&self) -> bool {
        let ready = self.health.as_deref() == Some(READY);
        if !self.syncs_here() {
            return ready;
        }
        ready
            && self.status.as_deref() == Some(SYNCED)
            && self.failed.is_empty()
            && !self.workloads.values().any(|w| w.state == DEGRADED)
    }
}

/// Runs `flotilla status`.
pub fn status_command(args: StatusArgs, stdout: &mut dyn Write) -> Result<Outcome, CliError> {
    let url = status_url(&args.server)?;
    let runtime = super::runtime()?;
    let answer = runtime.block_on(fetch(&url, TIMEOUT));
    // A name lookup still running after the timeout must not hold the command up.
    runtime.shutdown_background();
    let body = answer.map_err(|problem| agent_error(&url, problem))?;
    let (value, status) = read_answer(&body).map_err(|problem| agent_error(&url, problem))?;
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
async fn fetch(url: &Uri, timeout: Duration) -> Result<Bytes, String> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(timeout));
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let request = http::Request::get(url.clone())
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::new())
        .map_err(|error| format!("building the request: {error}"))?;
    let exchange = async {
        let response = client.request(request).await.map_err(|error| {
            if error.is_connect() {
                format!(
                    "cannot connect (is `flotilla run` serving there?): {}",
                    causes(&error)
                )
            } else {
                format!("request failed: {}", causes(&error))
            }
        })?;
        let code = response.status();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|error| format!("reading the answer: {}", chain(&*error)))?
            .to_bytes();
        if code != http::StatusCode::OK {
            let text = String::from_utf8_lossy(&body);
            let text = shortened(text.trim());
            return Err(if text.is_empty() {
                format!("answered HTTP {code}")
            } else {
                format!("answered HTTP {code}: {text}")
            });
        }
        Ok(body)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {:.1} s", timeout.as_secs_f64())))
}

/// An error's causes, without the error itself (whose text says only `client error (Connect)`).
fn causes(error: &(dyn StdError + 'static)) -> String {
    match error.source() {
        Some(source) => chain(source),
        None => error.to_string(),
    }
}

/// An error and its causes, joined by `: `.
fn chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(source) = next {
        text.push_str(": ");
        text.push_str(&source.to_string());
        next = source.source();
    }
    text
}

/// The answer as JSON and as a status; an error says why it is not a `/status` answer.
fn read_answer(body: &[u8]) -> Result<(Value, AgentStatus), String> {
    let text =
        std::str::from_utf8(body).map_err(|error| format!("the answer is not UTF-8: {error}"))?;
    let value: Value =
        serde_json::from_str(text).map_err(|error| format!("the answer is not JSON: {error}"))?;
    if !value.is_object() {
        return Err("the answer is not a JSON object".into());
    }
    let status: AgentStatus = serde_path_to_error::deserialize(&value)
        .map_err(|error| format!("the answer is not a flotilla /status: {error}"))?;
    Ok((value, status))
}

/// Exit 0 when every cluster is Ready and every cluster synced here is synced with no failed
/// object and no Degraded workload; 1 otherwise.
fn outcome(status: &AgentStatus) -> Outcome {
    if status.clusters.values().all(ClusterState::healthy) {
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

/// `Kind[.group] namespace/name` for an object reference (or its text, if the agent sent one).
fn object_name(object: &Value) -> String {
    match object {
        Value::String(text) => text.clone(),
        Value::Object(fields) => {
            let field = |key: &str| fields.get(key).and_then(Value::as_str).unwrap_or("");
            let kind = match field("group") {
                "" => field("kind").to_string(),
                group => format!("{}.{group}", field("kind")),
            };
            match field("namespace") {
                "" => format!("{kind}/{}", field("name")),
                namespace => format!("{kind} {namespace}/{}", field("name")),
            }
        }
        other => other.to_string(),
    }
}

fn shares(shares: &[Share]) -> String {
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

/// `2 Available, 1 Degraded`: known states in order, then any other, or `-` for none.
fn workload_counts(workloads: &BTreeMap<String, Workload>) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for workload in workloads.values() {
        *counts.entry(workload.state.as_str()).or_default() += 1;
    }
    let mut parts = Vec::new();
    for state in [AVAILABLE, PROGRESSING, DEGRADED] {
        if let Some(count) = counts.remove(state) {
            parts.push(format!("{count} {state}"));
        }
    }
    parts.extend(
        counts
            .iter()
            .map(|(state, count)| format!("{count} {state}")),
    );
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
fn status_table(status: &AgentStatus) -> String {
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
                cluster.health.clone().unwrap_or_else(|| "-".into()),
                match cluster.synced_here {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "-",
                }
                .into(),
                cluster.status.clone().unwrap_or_else(|| "-".into()),
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
        match cluster.health.as_deref() {
            Some(READY) => {}
            health => problems.push(format!(
                "  {name}: {}{}\n",
                health.unwrap_or("health unknown"),
                cluster
                    .health_reason
                    .as_deref()
                    .map(|reason| format!(": {}", shortened(reason)))
                    .unwrap_or_default()
            )),
        }
        if let Some(error) = &cluster.error {
            problems.push(format!("  {name}: sync failed: {}\n", shortened(error)));
        } else if cluster.syncs_here() && cluster.status.is_none() {
            problems.push(format!("  {name}: not synced yet\n"));
        }
    }
    if !problems.is_empty() {
        out.push_str("\nClusters:\n");
        out.push_str(&problems.concat());
    }

    let mut workloads = vec![["CLUSTER", "WORKLOAD", "STATE", "REASON"].map(String::from)];
    let rank = |state: &str| match state {
        DEGRADED => 0,
        PROGRESSING => 1,
        _ => 2,
    };
    let mut unavailable: Vec<(&String, &String, &Workload)> = status
        .clusters
        .iter()
        .flat_map(|(name, cluster)| {
            cluster
                .workloads
                .iter()
                .filter(|(_, workload)| workload.state != AVAILABLE)
                .map(move |(object, workload)| (name, object, workload))
        })
        .collect();
    unavailable.sort_by_key(|(_, _, workload)| rank(&workload.state));
    for (cluster, object, workload) in unavailable {
        workloads.push([
            cluster.clone(),
            object.clone(),
            workload.state.clone(),
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
                object_name(&problem.object),
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

    fn parse(text: &str) -> AgentStatus {
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
            two.health = Some("NotReady".into());
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
            one.status = Some("synced".into());
            one.failed.clear();
        }
        assert_eq!(outcome(&status), Outcome::Failed);
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
        let started = std::time::Instant::now();
        let error = runtime
            .block_on(fetch(&url, Duration::from_millis(200)))
            .unwrap_err();
        assert_eq!(error, "no answer within 0.2 s");
        assert!(started.elapsed() < Duration::from_secs(3));
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
}
