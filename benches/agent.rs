//! `just bench`: the agent (`flotilla run`) on real apiservers (DESIGN.md section 6).
//!
//! 1. Webhook -> applied: 5 clusters x 50 objects; 20 commits, each pushed to a local bare repo
//!    and announced with a signed GitHub webhook; the time until `/status` shows every cluster
//!    synced to it. Target p50 <= 1 s.
//! 2. Drift correction: `spec.replicas` of a managed Deployment changed by another field
//!    manager, 20 times; the time until the apiserver shows it restored. Target <= 1 s.
//! 3. Memory: the agent's RSS syncing 20 clusters x 500 objects. Target <= 100 MiB.

#[path = "../tests/e2e/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use harness::{Agent, Clusters, git, github_signature};
use serde_json::Value;

const COMMITS: usize = 20;
const DRIFTS: usize = 20;

fn main() {
    // FLOTILLA_BENCH_ONLY=latency or =memory runs one part.
    let only = std::env::var("FLOTILLA_BENCH_ONLY").unwrap_or_default();
    if only != "memory" {
        webhook_and_drift();
    }
    if only != "latency" {
        memory();
    }
}

fn webhook_and_drift() {
    let names: Vec<String> = (1..=5).map(|i| format!("agent-{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let clusters = Clusters::start(&names);
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, work) = harness::git_remote_and_work(dir.path());
    let remote = dir.path().join("remote.git");
    let push = |round: usize| {
        write_fleet(&work, &names, "bench-agent", 50, round);
        git(&work, &["add", "."]);
        git(&work, &["commit", "-q", "-m", &format!("round {round}")]);
        git(
            &work,
            &[
                "push",
                "-q",
                "-f",
                remote.to_str().expect("utf-8"),
                "HEAD:main",
            ],
        );
        git(&work, &["rev-parse", "HEAD"])
    };
    push(0);
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "bench-secret").expect("secret");
    let agent = Agent::start(&[
        "--repo",
        &format!("file://{}", remote.display()),
        "--kubeconfig",
        &clusters.kubeconfig.to_string_lossy(),
        "--interval",
        "1h",
        "--github-secret-file",
        &secret.to_string_lossy(),
        "--cache-dir",
        &dir.path().join("cache").to_string_lossy(),
        "--name",
        "bench-agent",
    ]);
    wait_synced_to(&agent, names.len(), None, Duration::from_secs(120));

    let mut latencies = Vec::new();
    for round in 1..=COMMITS {
        let commit = push(round);
        let body = format!(r#"{{"ref":"refs/heads/main","after":"{commit}"}}"#);
        let signature = github_signature(b"bench-secret", body.as_bytes());
        let started = Instant::now();
        let (code, _) = agent.request(
            "POST",
            "/hooks/github",
            &[
                ("X-GitHub-Event", "push"),
                ("X-GitHub-Delivery", &format!("bench-{round}")),
                ("X-Hub-Signature-256", &signature),
            ],
            body.as_bytes(),
        );
        assert_eq!(code, 202);
        wait_synced_to(&agent, names.len(), Some(&commit), Duration::from_secs(60));
        latencies.push(started.elapsed());
    }

    // Drift: another manager scales a managed Deployment; time until it is scaled back. Each
    // round takes another (cluster, Deployment): the agent stops correcting an object that is
    // fought over more than 5 times a minute, which 20 quick rounds on one object would be.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let drift = runtime.block_on(async {
        let mut apis = Vec::new();
        for name in &names {
            let client = clusters.client(name).await;
            apis.push(
                kube::Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(
                    client,
                    "bench-agent",
                ),
            );
        }
        let params = kube::api::PatchParams {
            field_manager: Some("kubectl-scale".into()),
            ..Default::default()
        };
        let mut latencies = Vec::new();
        for round in 0..DRIFTS {
            let api = &apis[round % apis.len()];
            let deployment = format!("app-{}", (round / apis.len()) % 5);
            let replicas = 3 + round as i32;
            let patch = serde_json::json!({"spec": {"replicas": replicas}});
            let started = Instant::now();
            api.patch(&deployment, &params, &kube::api::Patch::Merge(patch))
                .await
                .expect("scale");
            loop {
                let live = api.get(&deployment).await.expect("get");
                if live.spec.replicas == Some(1) {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "drift of {deployment} not corrected"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            latencies.push(started.elapsed());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        latencies
    });

    println!("agent on 5 clusters x 50 objects:");
    println!(
        "  webhook -> applied on every cluster, {COMMITS} commits: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms (target p50 <= 1000 ms)",
        ms(percentile(&latencies, 50)),
        ms(percentile(&latencies, 99)),
        ms(percentile(&latencies, 100)),
    );
    println!(
        "  drift corrected (replicas changed by another manager), {DRIFTS} times: p50 {:.0} ms, p99 {:.0} ms (target <= 1000 ms)",
        ms(percentile(&drift, 50)),
        ms(percentile(&drift, 99)),
    );
}

fn memory() {
    let names: Vec<String> = (1..=20).map(|i| format!("rss-{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let clusters = Clusters::start(&names);
    let dir = tempfile::tempdir().expect("tempdir");
    write_fleet(dir.path(), &names, "bench-rss", 500, 0);
    let started = Instant::now();
    let agent = Agent::start(&[
        "--path",
        &dir.path().to_string_lossy(),
        "--kubeconfig",
        &clusters.kubeconfig.to_string_lossy(),
        "--interval",
        "1h",
        "--name",
        "bench-rss",
    ]);
    wait_synced_to(&agent, names.len(), None, Duration::from_secs(600));
    let synced = started.elapsed();
    // Let the drift watches list everything they manage.
    std::thread::sleep(Duration::from_secs(5));
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.child.id()))
        .expect("/proc status");
    let field = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<u64>().ok())
            .map_or(0, |kib| kib / 1024)
    };
    println!(
        "agent on 20 clusters x 500 objects (10,000 objects, first sync {:.1} s): RSS {} MiB, peak {} MiB (target <= 100 MiB)",
        synced.as_secs_f64(),
        field("VmRSS:"),
        field("VmHWM:"),
    );
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn percentile(values: &[Duration], p: usize) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    let index = ((sorted.len() * p).div_ceil(100)).clamp(1, sorted.len()) - 1;
    sorted[index]
}

/// A fleet of `clusters`, each holding a Namespace, ConfigMaps and Deployments (`objects` in
/// all); `round` changes one ConfigMap, as a commit would.
fn write_fleet(dir: &Path, clusters: &[&str], namespace: &str, objects: usize, round: usize) {
    let mut fleet = String::from(
        "apiVersion: fleet.kurator.dev/v1alpha1\nkind: Fleet\nmetadata: {name: bench, namespace: flotilla-system}\nspec:\n  placement: {}\n  clusters:\n",
    );
    for cluster in clusters {
        writeln!(fleet, "    - {{name: {cluster}, kind: AttachedCluster}}").expect("write");
    }
    let mut apps = format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {namespace}}}\n");
    let deployments = if objects <= 50 { 5 } else { 0 };
    for i in 0..deployments {
        write!(
            apps,
            "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: app-{i}, namespace: {namespace}}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: app-{i}}}}}\n  template:\n    metadata: {{labels: {{app: app-{i}}}}}\n    spec:\n      containers: [{{name: app, image: registry.example.com/app:{i}}}]\n"
        )
        .expect("write");
    }
    for i in 0..objects - 1 - deployments {
        let value = if i == 0 { round } else { 0 };
        write!(
            apps,
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: config-{i}, namespace: {namespace}}}\ndata: {{index: \"{i}\", round: \"{value}\", level: info}}\n"
        )
        .expect("write");
    }
    std::fs::write(dir.join("fleet.yaml"), fleet).expect("write fleet");
    std::fs::write(dir.join("apps.yaml"), apps).expect("write apps");
}

/// Waits until `/status` shows all `clusters` synced (to `commit`, when given).
fn wait_synced_to(agent: &Agent, clusters: usize, commit: Option<&str>, limit: Duration) {
    let started = Instant::now();
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", agent.port)).is_ok() {
            let (code, body) = agent.request("GET", "/status", &[], b"");
            let status: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            let done = code == 200
                && status["clusters"].as_object().is_some_and(|views| {
                    views.len() == clusters
                        && views.values().all(|view| {
                            view["status"] == "synced" && commit.is_none_or(|c| view["commit"] == c)
                        })
                });
            if done {
                return;
            }
        }
        assert!(
            started.elapsed() < limit,
            "the agent did not sync within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
