//! Real member clusters for the end-to-end tests, started by `tests/e2e/clusters.sh`.
//!
//! One set of apiservers serves every test of the binary: tests keep to their own namespaces
//! and sync names and share the clusters (a read lock); a test that stops an apiserver or
//! counts an apiserver's requests holds the write lock. The supervisor script stops everything
//! when this process's end closes its stdin, whatever way the process ends.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Mutex, OnceLock};

use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::Value;

#[path = "../support/tools.rs"]
mod tools;

/// The member clusters: the example fleet's names, so the example applies as written.
pub const MEMBERS: [&str; 5] = [
    "cluster-hangzhou",
    "cluster-shanghai",
    "cluster-frankfurt",
    "spot-cluster",
    "ondemand-cluster",
];

/// Started clusters and the supervisor that owns them.
pub struct Clusters {
    /// The kubeconfig with one context per cluster.
    pub kubeconfig: PathBuf,
    supervisor: Mutex<Supervisor>,
    lock: RwLock<()>,
}

struct Supervisor {
    _child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

/// The shared clusters, started on first use.
pub fn clusters() -> &'static Clusters {
    static CLUSTERS: OnceLock<Clusters> = OnceLock::new();
    CLUSTERS.get_or_init(|| {
        // The example fleet's status-page app is a Helm chart: in-process syncs and the
        // `flotilla` processes the tests start (which inherit it) find helm through this.
        tools::use_helm();
        Clusters::start(&MEMBERS)
    })
}

impl Clusters {
    /// Starts a new set of clusters with these names (most callers want [`clusters`]).
    pub fn start(names: &[&str]) -> Clusters {
        Clusters::start_with(names, &[])
    }

    /// [`Clusters::start`] with options of `clusters.sh up` (`--etcd-per-cluster`, which
    /// [`Clusters::stop_etcd`] needs).
    pub fn start_with(names: &[&str], options: &[&str]) -> Clusters {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/clusters.sh");
        // One state directory per set: a process may start several (the benchmarks do).
        static SETS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let set = SETS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let state = std::env::temp_dir().join(format!("flotilla-e2e-{}-{set}", std::process::id()));
        let mut child = Command::new(&script)
            .arg("up")
            .args(options)
            .arg("--state")
            .arg(&state)
            .args(names)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|error| panic!("starting {}: {error}", script.display()));
        let stdin = child.stdin.take().expect("piped stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("reading clusters.sh");
        let kubeconfig = line
            .strip_prefix("ready ")
            .unwrap_or_else(|| panic!("clusters.sh did not start the clusters: {line:?}"))
            .trim()
            .into();
        Clusters {
            kubeconfig,
            supervisor: Mutex::new(Supervisor {
                _child: child,
                stdin,
                stdout,
            }),
            lock: RwLock::new(()),
        }
    }

    /// For a test that shares the clusters with others.
    pub async fn shared(&self) -> RwLockReadGuard<'_, ()> {
        self.lock.read().await
    }

    /// For a test that must be alone on the clusters (stops one, or counts requests).
    pub async fn exclusive(&self) -> RwLockWriteGuard<'_, ()> {
        self.lock.write().await
    }

    fn command(&self, verb: &str, name: &str) {
        let mut supervisor = self.supervisor.lock().unwrap_or_else(|p| p.into_inner());
        writeln!(supervisor.stdin, "{verb} {name}").expect("writing to clusters.sh");
        supervisor.stdin.flush().expect("flushing clusters.sh");
        let mut line = String::new();
        supervisor
            .stdout
            .read_line(&mut line)
            .expect("reading clusters.sh");
        assert_eq!(
            line.trim(),
            format!("ok {name}"),
            "clusters.sh {verb} {name}"
        );
    }

    /// Kills the apiserver and controller-manager of one cluster.
    pub fn stop(&self, name: &str) {
        self.command("stop", name);
    }

    /// Starts a stopped cluster again and waits until it is ready.
    pub fn start_again(&self, name: &str) {
        self.command("start", name);
    }

    /// Kills one cluster's own etcd, leaving its apiserver running (clusters started with
    /// `--etcd-per-cluster`).
    pub fn stop_etcd(&self, name: &str) {
        self.command("stop-etcd", name);
    }

    /// Starts a stopped etcd again on its data, and waits until the apiserver is ready.
    pub fn start_etcd(&self, name: &str) {
        self.command("start-etcd", name);
    }

    /// The kubectl of the clusters' Kubernetes version (the lane's own, see clusters.sh).
    pub fn kubectl(&self) -> PathBuf {
        self.kubeconfig
            .parent()
            .expect("the kubeconfig is in the state directory")
            .join("bin/kubectl")
    }

    /// A kube client for one cluster.
    pub async fn client(&self, name: &str) -> kube::Client {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("kubeconfig");
        let options = KubeConfigOptions {
            context: Some(name.to_string()),
            ..KubeConfigOptions::default()
        };
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .expect("kubeconfig context");
        kube::Client::try_from(config).expect("kube client")
    }

    /// The apiserver's `apiserver_request_total` counters, summed per verb.
    pub async fn requests_by_verb(&self, name: &str) -> BTreeMap<String, f64> {
        let client = self.client(name).await;
        let request = http::Request::get("/metrics")
            .body(Vec::new())
            .expect("request");
        let text = client.request_text(request).await.expect("GET /metrics");
        let mut totals = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
                continue;
            };
            let Some((labels, value)) = rest.rsplit_once("} ") else {
                continue;
            };
            let verb = labels
                .split(',')
                .find_map(|label| label.strip_prefix("verb=\""))
                .map(|verb| verb.trim_end_matches('"').to_string())
                .unwrap_or_default();
            let value: f64 = value.trim().parse().unwrap_or(0.0);
            *totals.entry(verb).or_insert(0.0) += value;
        }
        totals
    }
}

/// The write verbs of `apiserver_request_total` (server-side apply is `APPLY`).
pub const WRITE_VERBS: [&str; 6] = [
    "APPLY",
    "CREATE",
    "DELETE",
    "DELETECOLLECTION",
    "PATCH",
    "UPDATE",
];

/// Sums the write verbs.
pub fn writes(counters: &BTreeMap<String, f64>) -> f64 {
    WRITE_VERBS
        .iter()
        .filter_map(|verb| counters.get(*verb))
        .sum()
}

/// Every object labelled with a sync name in one cluster, by "Kind namespace/name", found by
/// listing each served kind (kube's own discovery, not Flotilla's).
pub async fn labelled_objects(client: &kube::Client, sync_name: &str) -> BTreeMap<String, Value> {
    use kube::api::{Api, DynamicObject, ListParams};
    use kube::discovery::{Discovery, verbs};
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .expect("discovery");
    let params = ListParams::default().labels(&format!("flotilla.dev/inventory={sync_name}"));
    let mut objects = BTreeMap::new();
    for group in discovery.groups() {
        for (resource, capabilities) in group.recommended_resources() {
            if !capabilities.supports_operation(verbs::LIST) {
                continue;
            }
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
            let Ok(list) = api.list(&params).await else {
                continue;
            };
            for object in list.items {
                let key = format!(
                    "{} {}/{}",
                    resource.kind,
                    object.metadata.namespace.clone().unwrap_or_default(),
                    object.metadata.name.clone().unwrap_or_default()
                );
                objects.insert(key, serde_json::to_value(&object).expect("json"));
            }
        }
    }
    objects
}

/// Runs the `flotilla` binary; returns exit code, stdout and stderr.
pub fn flotilla(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(args)
        .env("FLOTILLA_LOG", "warn")
        .output()
        .expect("running flotilla");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Writes files (path -> content) under a new directory, for a test fleet.
pub fn write_fleet(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (path, content) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, content).expect("write");
    }
    dir
}

/// A fleet of these members with a Deployment `web` of 6 replicas in `namespace`, divided
/// equally over them (2/2/2 over three): what failover moves.
pub fn divided_web_fleet(members: &[&str], namespace: &str) -> String {
    let clusters: Vec<String> = members.iter().map(|m| format!("{{name: {m}}}")).collect();
    format!(
        r#"apiVersion: fleet.kurator.dev/v1alpha1
kind: Fleet
metadata: {{name: fleet, namespace: flotilla-system}}
spec:
  clusters: [{clusters}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {namespace}}}
spec:
  replicas: 6
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers: [{{name: web, image: "nginx:1.25"}}]
---
apiVersion: policy.karmada.io/v1alpha1
kind: PropagationPolicy
metadata: {{name: web, namespace: {namespace}}}
spec:
  resourceSelectors: [{{apiVersion: apps/v1, kind: Deployment, name: web}}]
  placement:
    replicaScheduling: {{replicaSchedulingType: Divided}}
"#,
        clusters = clusters.join(", ")
    )
}

/// The agent (`flotilla run`) as a child process, killed when dropped; it also dies with the
/// test thread (PR_SET_PDEATHSIG).
pub struct Agent {
    /// The process.
    pub child: std::process::Child,
    /// Its HTTP port.
    pub port: u16,
    /// Its log lines with when the test read them, when started with [`Agent::start_logged`].
    pub log: std::sync::Arc<Mutex<Vec<(std::time::Instant, String)>>>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    /// Starts `flotilla run ARGS --listen 127.0.0.1:<free port>`.
    pub fn start(args: &[&str]) -> Agent {
        Agent::start_with(args, &[], None)
    }

    /// [`Agent::start`] with environment variables, logging JSON at `level` into
    /// [`Agent::log`], each line stamped when read.
    pub fn start_logged(args: &[&str], env: &[(&str, &str)], level: &str) -> Agent {
        Agent::start_with(args, env, Some(level))
    }

    fn start_with(args: &[&str], env: &[(&str, &str)], log_level: Option<&str>) -> Agent {
        let port = free_port();
        let mut command = std::process::Command::new("setpriv");
        command.envs(env.iter().copied());
        if let Some(level) = log_level {
            command
                .env("FLOTILLA_LOG", level)
                .env("FLOTILLA_LOG_FORMAT", "json")
                .stderr(std::process::Stdio::piped());
        } else {
            command.env(
                "FLOTILLA_LOG",
                std::env::var("FLOTILLA_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            );
        }
        let mut child = command
            .args([
                "--pdeathsig",
                "KILL",
                "--",
                env!("CARGO_BIN_EXE_flotilla"),
                "run",
            ])
            .args(args)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("flotilla run");
        let log = std::sync::Arc::new(Mutex::new(Vec::new()));
        if let Some(stderr) = child.stderr.take() {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
                    log.push((std::time::Instant::now(), line));
                }
            });
        }
        Agent { child, port, log }
    }

    /// `/status` as JSON, once the agent listens.
    pub fn status(&self) -> Value {
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let (code, body) = self.request("GET", "/status", &[], b"");
        assert_eq!(code, 200, "/status: {body}");
        serde_json::from_str(&body).expect("status JSON")
    }

    /// One HTTP/1.1 request to the agent; returns the status code and body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, String) {
        http_request(self.port, method, path, headers, body)
    }

    /// Waits until `/readyz` answers 200.
    pub fn wait_ready(&self) {
        for _ in 0..300 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && self.request("GET", "/readyz", &[], b"").0 == 200
            {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        panic!(
            "the agent was not ready after 60 s: {:?}",
            self.request("GET", "/readyz", &[], b"")
        );
    }
}

/// One HTTP/1.1 request on loopback; returns the status code and body.
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    use std::io::{Read, Write};
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

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port()
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let output = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .output()
        .expect("git");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

pub fn github_signature(secret: &[u8], body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("key");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    format!(
        "sha256={}",
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

/// In `dir`: a bare repository `remote.git` and an empty work tree `work` on branch `main`.
/// Returns (remote, work).
pub fn git_remote_and_work(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let work = dir.join("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    git(dir, &["init", "-q", "--bare", "-b", "main", "remote.git"]);
    git(&work, &["init", "-q", "-b", "main"]);
    (dir.join("remote.git"), work)
}

/// A one-container Deployment (container `web`) as a YAML document.
pub fn web_deployment(
    namespace: &str,
    name: &str,
    replicas: u32,
    image: &str,
    annotations: &str,
) -> String {
    format!(
        r#"---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {namespace}
  annotations: {{{annotations}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers: [{{name: web, image: "{image}"}}]
"#
    )
}

/// `tests/e2e/git-http-server.py` serving the repositories under `root`, killed when dropped.
pub struct GitServer {
    child: std::process::Child,
    /// Where it listens.
    pub address: std::net::SocketAddr,
}

impl Drop for GitServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl GitServer {
    /// Starts it; it has printed its port, so it listens, when this returns.
    pub fn start(root: &Path, token: &str) -> GitServer {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/git-http-server.py");
        let mut child = std::process::Command::new("python3")
            .arg(&script)
            .arg(root)
            .arg(token)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 git-http-server.py");
        let mut port = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut port)
            .expect("the server's port");
        let port: u16 = port
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("git-http-server.py printed {port:?}"));
        GitServer {
            child,
            address: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }
}
