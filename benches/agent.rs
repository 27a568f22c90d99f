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
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::Clusters;
use hmac::{Hmac, Mac};
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
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    git(
        dir.path(),
        &["init", "-q", "--bare", "-b", "main", "remote.git"],
    );
    git(&work, &["init", "-q", "-b", "main"]);
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
    agent.wait_synced_to(names.len(), None, Duration::from_secs(120));

    let mut latencies = Vec::new();
    for round in 1..=COMMITS {
        let commit = push(round);
        let body = format!(r#"{{"ref":"refs/heads/main","after":"{commit}"}}"#);
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"bench-secret").expect("key");
        mac.update(body.as_bytes());
        let signature: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let started = Instant::now();
        let (code, _) = http(
            agent.port,
            "POST",
            "/hooks/github",
            &[
                ("X-GitHub-Event", "push"),
                ("X-GitHub-Delivery", &format!("bench-{round}")),
                ("X-Hub-Signature-256", &format!("sha256={signature}")),
            ],
            body.as_bytes(),
        );
        assert_eq!(code, 202);
        agent.wait_synced_to(names.len(), Some(&commit), Duration::from_secs(60));
        latencies.push(started.elapsed());
    }

    // Drift: another manager scales a managed Deployment; time until it is scaled back.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let drift = runtime.block_on(async {
        let client = clusters.client("agent-1").await;
        let api: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
            kube::Api::namespaced(client, "bench-agent");
        let params = kube::api::PatchParams {
            field_manager: Some("kubectl-scale".into()),
            ..Default::default()
        };
        let mut latencies = Vec::new();
        for round in 0..DRIFTS {
            let replicas = 3 + round as i32;
            let patch = serde_json::json!({"spec": {"replicas": replicas}});
            let started = Instant::now();
            api.patch("app-0", &params, &kube::api::Patch::Merge(patch))
                .await
                .expect("scale");
            loop {
                let deployment = api.get("app-0").await.expect("get");
                if deployment.spec.replicas == Some(1) {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "drift not corrected"
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
    agent.wait_synced_to(names.len(), None, Duration::from_secs(600));
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

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.com")
        .env("GIT_COMMITTER_NAME", "bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.com")
        .output()
        .expect("git");
    assert!(output.status.success(), "git {args:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

struct Agent {
    child: Child,
    port: u16,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    fn start(args: &[&str]) -> Agent {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("free port")
            .port();
        let child = Command::new("setpriv")
            .args([
                "--pdeathsig",
                "KILL",
                "--",
                env!("CARGO_BIN_EXE_flotilla"),
                "run",
            ])
            .args(args)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("FLOTILLA_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("flotilla run");
        Agent { child, port }
    }

    /// Waits until `/status` shows all `clusters` synced (to `commit`, when given).
    fn wait_synced_to(&self, clusters: usize, commit: Option<&str>, limit: Duration) {
        let expected = clusters;
        let started = Instant::now();
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                let (code, body) = http(self.port, "GET", "/status", &[], b"");
                let status: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                let clusters = status["clusters"].as_object();
                let done = code == 200
                    && clusters.is_some_and(|clusters| {
                        clusters.len() == expected
                            && clusters.values().all(|cluster| {
                                cluster["status"] == "synced"
                                    && commit.is_none_or(|c| cluster["commit"] == c)
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
}

fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("write");
    stream.write_all(body).expect("write body");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}
