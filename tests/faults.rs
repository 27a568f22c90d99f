//! The fault suite (issue 14): the agent (`flotilla run`, the real binary) follows a fleet
//! repo served from a real Git remote and syncs three real member apiservers, each with its
//! own etcd, while one part fails: a member's apiserver is killed in the middle of a sync, a
//! member's etcd stops, the Git remote goes away and comes back rewritten to an older commit,
//! a member answers slowly. Each time the agent must converge, lose nothing (an object that
//! stays in Git keeps its uid: it was never deleted and made again), prune exactly what left
//! Git, and never hold up the healthy members, which is asserted by order: they reach the new
//! commit while the failing member has not.
//!
//! A test that stops a part of a cluster runs alone (the harness's exclusive lock); the
//! others share the clusters, each with its own namespace and sync name. The agent SIGKILLed
//! mid-sync is `tests/crash_safety.rs`.

#[path = "e2e/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use harness::{Agent, Clusters, GitServer, git, labelled_objects};
use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::Value;

/// Two members that stay healthy, and the one every test makes fail.
const HEALTHY: [&str; 2] = ["fault-a", "fault-b"];
const VICTIM: &str = "fault-c";
const MEMBERS: [&str; 3] = ["fault-a", "fault-b", VICTIM];

/// This file's clusters: each has its own etcd, so stopping one cluster's etcd leaves the
/// others' storage alone (the e2e suite's clusters share one etcd).
fn clusters() -> &'static Clusters {
    static CLUSTERS: OnceLock<Clusters> = OnceLock::new();
    CLUSTERS.get_or_init(|| Clusters::start_with(&MEMBERS, &["--etcd-per-cluster"]))
}

/// How long a step may take before the test fails rather than hangs: generous, since two cores
/// are shared with other builds (no assertion is about speed).
const PATIENCE: Duration = Duration::from_secs(180);

/// One test's name: its sync's (the agent's `--name`, the inventory) and its namespace.
struct Scenario(&'static str);

/// ConfigMap name -> its `data.value`: what a commit holds, and what a member must hold.
type ConfigMaps = BTreeMap<String, String>;

fn config_maps(pairs: &[(&str, &str)]) -> ConfigMaps {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

/// `count` ConfigMaps `PREFIX-00`.. holding `value`.
fn numbered(prefix: &str, count: usize, value: &str) -> ConfigMaps {
    (0..count)
        .map(|i| (format!("{prefix}-{i:02}"), value.to_string()))
        .collect()
}

impl Scenario {
    /// A Fleet of every member, placing every ConfigMap in all of them.
    fn fleet(&self, objects: &ConfigMaps) -> String {
        let clusters: Vec<String> = MEMBERS
            .iter()
            .map(|m| format!("    - {{name: {m}, kind: AttachedCluster}}\n"))
            .collect();
        let mut fleet = format!(
            "apiVersion: fleet.kurator.dev/v1alpha1\nkind: Fleet\n\
             metadata: {{name: {sync}, namespace: flotilla-system}}\n\
             spec:\n  clusters:\n{clusters}  placement: {{}}\n",
            sync = self.0,
            clusters = clusters.concat(),
        );
        for (name, value) in objects {
            fleet.push_str(&format!(
                "---\napiVersion: v1\nkind: ConfigMap\n\
                 metadata: {{name: {name}, namespace: {namespace}}}\n\
                 data: {{value: {value}}}\n",
                namespace = self.0
            ));
        }
        fleet
    }

    /// This sync's ConfigMaps in a member, read straight from its apiserver (never through a
    /// test proxy): name -> (value, uid).
    async fn live(&self, cluster: &str) -> BTreeMap<String, (String, String)> {
        let client = clusters().client(cluster).await;
        let api: kube::Api<ConfigMap> = kube::Api::namespaced(client, self.0);
        let params =
            kube::api::ListParams::default().labels(&format!("flotilla.dev/inventory={}", self.0));
        let list = api.list(&params).await.expect("list ConfigMaps");
        list.items
            .into_iter()
            .map(|cm| {
                let value = cm
                    .data
                    .as_ref()
                    .and_then(|data| data.get("value"))
                    .cloned()
                    .unwrap_or_default();
                (
                    cm.metadata.name.unwrap_or_default(),
                    (value, cm.metadata.uid.unwrap_or_default()),
                )
            })
            .collect()
    }

    /// Whether a member holds exactly `objects` (nothing missing, nothing left over).
    async fn holds(&self, cluster: &str, objects: &ConfigMaps) -> bool {
        let live: ConfigMaps = self
            .live(cluster)
            .await
            .into_iter()
            .map(|(name, (value, _))| (name, value))
            .collect();
        live == *objects
    }

    /// Waits until the agent reports `members` synced to `commit` and each holds exactly
    /// `objects`.
    async fn converge(&self, agent: &Agent, members: &[&str], commit: &str, objects: &ConfigMaps) {
        let what = format!("{members:?} synced to {commit}, holding {objects:?}");
        wait_for(agent, &what, || async {
            let status = status(agent).await;
            for member in members {
                if !synced_at(&status, member, commit) || !self.holds(member, objects).await {
                    return false;
                }
            }
            true
        })
        .await;
    }

    /// Every object labelled with this sync in every member, once the test is done: only the
    /// ConfigMaps of `objects` and their Namespace (nothing of an older commit left behind).
    async fn assert_nothing_else(&self, objects: &ConfigMaps) {
        let mut expected: Vec<String> = objects
            .keys()
            .map(|name| format!("ConfigMap {}/{name}", self.0))
            .collect();
        for member in MEMBERS {
            let client = clusters().client(member).await;
            let mut live: Vec<String> = labelled_objects(&client, self.0)
                .await
                .into_keys()
                .filter(|key| *key != format!("Namespace /{}", self.0))
                .collect();
            live.sort();
            expected.sort();
            assert_eq!(live, expected, "{member} holds exactly the last commit");
        }
    }
}

/// The agent's `/status`.
async fn status(agent: &Agent) -> Value {
    tokio::task::block_in_place(|| agent.status())
}

fn synced_at(status: &Value, cluster: &str, commit: &str) -> bool {
    let view = &status["clusters"][cluster];
    view["status"] == "synced" && view["commit"] == commit
}

/// Polls `check` until it holds; fails after [`PATIENCE`] with the agent's status and the end
/// of its log.
async fn wait_for<F, Fut>(agent: &Agent, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!(
        "not within {PATIENCE:?}: {what}\nstatus: {:#}\nlog:\n{}",
        status(agent).await,
        log_tail(agent)
    );
}

fn log_tail(agent: &Agent) -> String {
    let log = agent.log.lock().unwrap_or_else(|p| p.into_inner());
    let start = log.len().saturating_sub(40);
    log[start..]
        .iter()
        .map(|(_, line)| line.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A fleet repo: a bare remote and a work tree that pushes to it.
struct Repo {
    dir: tempfile::TempDir,
    work: PathBuf,
    remote: PathBuf,
}

impl Repo {
    fn new() -> Repo {
        let dir = tempfile::tempdir().expect("tempdir");
        let (remote, work) = harness::git_remote_and_work(dir.path());
        Repo { dir, work, remote }
    }

    fn file_url(&self) -> String {
        format!("file://{}", self.remote.display())
    }

    /// Commits the scenario's fleet holding `objects`, pushes it; returns the commit.
    fn commit(&self, scenario: &Scenario, objects: &ConfigMaps) -> String {
        std::fs::write(self.work.join("fleet.yaml"), scenario.fleet(objects)).expect("write");
        git(&self.work, &["add", "."]);
        git(&self.work, &["commit", "-q", "-m", "fleet"]);
        self.force_push("HEAD");
        git(&self.work, &["rev-parse", "HEAD"])
    }

    /// Points the remote's `main` at `commit`, whatever it pointed at.
    fn force_push(&self, commit: &str) {
        let remote = self.remote.to_str().expect("utf-8");
        git(
            &self.work,
            &[
                "push",
                "-q",
                "-f",
                remote,
                &format!("{commit}:refs/heads/main"),
            ],
        );
    }
}

/// `flotilla run` on `repo_url`, polling every 2 s (so a retry is never further off than
/// that), with the members' credentials in `kubeconfig`, logging into [`Agent::log`].
fn start_agent(
    repo_url: &str,
    kubeconfig: &Path,
    scenario: &Scenario,
    dir: &Path,
    extra: &[&str],
) -> Agent {
    let cache = dir.join("cache");
    let mut args = vec![
        "--repo",
        repo_url,
        "--kubeconfig",
        kubeconfig.to_str().expect("utf-8"),
        "--interval",
        "2s",
        "--cache-dir",
        cache.to_str().expect("utf-8"),
        "--name",
        scenario.0,
    ];
    args.extend_from_slice(extra);
    Agent::start_logged(&args, &[], "info")
}

/// A scenario whose agent has synced its first commit (ConfigMaps `keep` and `old` at `v1`)
/// to every member.
struct Started {
    repo: Repo,
    agent: Agent,
    /// The victim's `keep`, which stays in every commit: a new uid would mean it was lost.
    keep_uid: String,
    /// The proxy in front of a slow victim, stopped when dropped.
    _proxy: Option<Proxy>,
}

impl Scenario {
    /// Commits the first fleet to a new repo and runs the agent on it (`extra` arguments
    /// added) until every member holds it; with `slow_victim`, the agent reaches the victim
    /// through a proxy that delays each chunk that long.
    async fn start(&self, slow_victim: Option<Duration>, extra: &[&str]) -> Started {
        let repo = Repo::new();
        let proxy = match slow_victim {
            Some(delay) => Some(Proxy::start(0, apiserver_address(VICTIM), delay).await),
            None => None,
        };
        let kubeconfig = match &proxy {
            Some(proxy) => kubeconfig_through(repo.dir.path(), VICTIM, proxy.port),
            None => clusters().kubeconfig.clone(),
        };
        let first = config_maps(&[("keep", "v1"), ("old", "v1")]);
        let commit = repo.commit(self, &first);
        let agent = start_agent(&repo.file_url(), &kubeconfig, self, repo.dir.path(), extra);
        self.converge(&agent, &MEMBERS, &commit, &first).await;
        let keep_uid = self.live(VICTIM).await["keep"].1.clone();
        Started {
            repo,
            agent,
            keep_uid,
            _proxy: proxy,
        }
    }
}

impl Started {
    /// Waits until the victim holds `commit` too, with its `keep` the very object it held at
    /// the start (updated in place, never deleted and made again: nothing was lost).
    async fn victim_catches_up(&self, scenario: &Scenario, commit: &str, objects: &ConfigMaps) {
        scenario
            .converge(&self.agent, &[VICTIM], commit, objects)
            .await;
        assert_eq!(
            scenario.live(VICTIM).await["keep"].1,
            self.keep_uid,
            "the victim's keep is the object it held before the fault"
        );
    }
}

/// Where a member's apiserver listens, from the clusters' kubeconfig.
fn apiserver_address(cluster: &str) -> SocketAddr {
    let kubeconfig =
        kube::config::Kubeconfig::read_from(&clusters().kubeconfig).expect("kubeconfig");
    let server = kubeconfig
        .clusters
        .iter()
        .find(|named| named.name == cluster)
        .and_then(|named| named.cluster.as_ref()?.server.clone())
        .unwrap_or_else(|| panic!("no server for {cluster} in the kubeconfig"));
    server
        .trim_start_matches("https://")
        .parse()
        .unwrap_or_else(|error| panic!("{server}: {error}"))
}

/// A copy of the clusters' kubeconfig, in `dir`, where `cluster` is reached through a proxy
/// on `port` (the apiserver's certificate names 127.0.0.1, whatever the port).
fn kubeconfig_through(dir: &Path, cluster: &str, port: u16) -> PathBuf {
    let text = std::fs::read_to_string(&clusters().kubeconfig).expect("kubeconfig");
    let direct = format!("server: https://{}\n", apiserver_address(cluster));
    assert_eq!(text.matches(&direct).count(), 1, "{direct} in\n{text}");
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        text.replace(&direct, &format!("server: https://127.0.0.1:{port}\n")),
    )
    .expect("write kubeconfig");
    path
}

/// A TCP proxy on loopback that holds each chunk read from either side for `delay` before
/// writing it on: a member (or Git server) that answers slowly. Stops, with every connection
/// through it, when dropped.
struct Proxy {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// Listens on `port` (0: any free port) and relays to `upstream`. A connection upstream
    /// refuses is closed at once, as a dead server's would be.
    async fn start(port: u16, upstream: SocketAddr, delay: Duration) -> Proxy {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap_or_else(|error| panic!("proxy on port {port}: {error}"));
        let port = listener.local_addr().expect("proxy address").port();
        let task = tokio::spawn(async move {
            // Dropped with the task: aborting the proxy cuts every connection through it.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                connections.spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::join!(
                        relay(client_read, server_write, delay),
                        relay(server_read, client_write, delay)
                    );
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Proxy { port, task }
    }
}

/// Copies `from` to `to`, each chunk `delay` late. (The crate's tokio has no `io-util`: this
/// waits for readiness and uses the non-blocking calls.) Dropping `to` at the end shuts its
/// direction down, as the peer that closed did.
async fn relay(
    from: tokio::net::tcp::OwnedReadHalf,
    to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let mut buffer = vec![0; 16 * 1024];
    loop {
        if from.readable().await.is_err() {
            return;
        }
        let read = match from.try_read(&mut buffer) {
            Ok(0) => return,
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return,
        };
        tokio::time::sleep(delay).await;
        let mut chunk = &buffer[..read];
        while !chunk.is_empty() {
            if to.writable().await.is_err() {
                return;
            }
            match to.try_write(chunk) {
                Ok(written) => chunk = &chunk[written..],
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    }
}

/// Runs `restore` if the test panics before [`std::mem::forget`]: a stopped part is started
/// again for the tests that come after.
struct OnPanic<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnPanic<F> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            (self.0)();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_apiserver_killed_mid_sync_is_reported_and_converges_after_restart() {
    let clusters = clusters();
    let _alone = clusters.exclusive().await;
    let scenario = Scenario("fault-apiserver");
    // The victim answers through a proxy that delays each chunk, and the agent sends two
    // requests at a time: its sync of 30 new objects then takes many seconds, so the kill
    // lands in the middle of it rather than before or after.
    let run = scenario
        .start(Some(Duration::from_millis(300)), &["--concurrency", "2"])
        .await;

    // The second commit changes one object, removes one and adds 30.
    let mut second = numbered("bulk", 30, "v2");
    second.insert("keep".into(), "v2".into());
    let commit2 = run.repo.commit(&scenario, &second);
    wait_for(
        &run.agent,
        "the victim's sync of the new objects begins",
        || async {
            scenario
                .live(VICTIM)
                .await
                .keys()
                .any(|name| name.starts_with("bulk-"))
        },
    )
    .await;
    let applied = scenario.live(VICTIM).await.len();
    tokio::task::block_in_place(|| clusters.stop(VICTIM));
    let restart = OnPanic(|| clusters.start_again(VICTIM));
    // A sync cannot succeed once the apiserver is dead: not synced now means killed mid-sync.
    let status_now = status(&run.agent).await;
    assert!(
        !synced_at(&status_now, VICTIM, &commit2),
        "the apiserver was killed mid-sync, not after it ({applied} of the second commit's \
         31 objects were in place): {status_now:#}"
    );

    wait_for(&run.agent, "the agent reports the dead member", || async {
        let status = status(&run.agent).await;
        let view = &status["clusters"][VICTIM];
        view["status"] == "failed"
            && view["error"]
                .as_str()
                .is_some_and(|error| error.contains("unreachable"))
    })
    .await;
    // The others were not held up: they hold the new commit while the victim is down.
    scenario
        .converge(&run.agent, &HEALTHY, &commit2, &second)
        .await;
    let status_down = status(&run.agent).await;
    assert_ne!(
        status_down["clusters"][VICTIM]["status"], "synced",
        "{status_down:#}"
    );
    let (_, metrics) =
        tokio::task::block_in_place(|| run.agent.request("GET", "/metrics", &[], b""));
    assert!(
        metrics.contains(&format!(
            "flotilla_cluster_reachable{{cluster=\"{VICTIM}\"}} 0"
        )),
        "{metrics}"
    );

    std::mem::forget(restart);
    tokio::task::block_in_place(|| clusters.start_again(VICTIM));
    run.victim_catches_up(&scenario, &commit2, &second).await;

    // What the interrupted sync created is still the agent's to prune: the next commit removes
    // the 30 objects (some created before the kill, the rest after the restart) everywhere.
    let third = config_maps(&[("keep", "v3")]);
    let commit3 = run.repo.commit(&scenario, &third);
    scenario
        .converge(&run.agent, &MEMBERS, &commit3, &third)
        .await;
    scenario.assert_nothing_else(&third).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_etcd_stopped_and_started_holds_up_only_that_member_and_loses_nothing() {
    let clusters = clusters();
    let _alone = clusters.exclusive().await;
    let scenario = Scenario("fault-etcd");
    let run = scenario.start(None, &[]).await;

    tokio::task::block_in_place(|| clusters.stop_etcd(VICTIM));
    let restart = OnPanic(|| clusters.start_etcd(VICTIM));
    let second = config_maps(&[("keep", "v2"), ("new", "v2")]);
    let commit2 = run.repo.commit(&scenario, &second);
    scenario
        .converge(&run.agent, &HEALTHY, &commit2, &second)
        .await;
    // Its apiserver still answers, but /readyz fails on etcd: the agent says so.
    wait_for(&run.agent, "the victim is NotReady", || async {
        status(&run.agent).await["clusters"][VICTIM]["health"] == "NotReady"
    })
    .await;
    let status_down = status(&run.agent).await;
    assert!(
        !synced_at(&status_down, VICTIM, &commit2),
        "nothing can be written without etcd: {status_down:#}"
    );

    std::mem::forget(restart);
    tokio::task::block_in_place(|| clusters.start_etcd(VICTIM));
    run.victim_catches_up(&scenario, &commit2, &second).await;
    wait_for(&run.agent, "the victim is Ready again", || async {
        status(&run.agent).await["clusters"][VICTIM]["health"] == "Ready"
    })
    .await;
    scenario.assert_nothing_else(&second).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_git_remote_gone_then_force_pushed_to_an_older_commit_is_followed_and_pruned() {
    let clusters = clusters();
    let _shared = clusters.shared().await;
    let scenario = Scenario("fault-git");
    let repo = Repo::new();
    let token = "git-token";
    let token_file = repo.dir.path().join("git-token");
    std::fs::write(&token_file, token).expect("write token");
    // The agent reaches the Git server through a proxy (no delay), so that the URL outlives
    // the server: the server is stopped and started again on another port.
    let server = GitServer::start(repo.dir.path(), token);
    let proxy = Proxy::start(0, server.address, Duration::ZERO).await;
    let url = format!("http://127.0.0.1:{}/remote.git", proxy.port);

    let older = config_maps(&[("base", "a"), ("keep", "a")]);
    let commit_a = repo.commit(&scenario, &older);
    let agent = start_agent(
        &url,
        &clusters.kubeconfig,
        &scenario,
        repo.dir.path(),
        &["--git-token-file", token_file.to_str().expect("utf-8")],
    );
    scenario.converge(&agent, &MEMBERS, &commit_a, &older).await;
    // Each cluster's sync logs in its span (JSON logs): the line names the cluster, the
    // commit and the stage.
    let synced: Vec<Value> = {
        let log = agent.log.lock().unwrap_or_else(|p| p.into_inner());
        log.iter()
            .filter_map(|(_, line)| serde_json::from_str::<Value>(line).ok())
            .filter(|line| line["fields"]["message"] == "cluster synced")
            .collect()
    };
    for member in MEMBERS {
        assert!(
            synced
                .iter()
                .any(|line| line["span"]["name"] == "cluster_sync"
                    && line["span"]["cluster"] == member
                    && line["span"]["commit"] == commit_a.as_str()
                    && line["span"]["stage"] == "record"),
            "no `cluster synced` line in the span of {member} at {commit_a}: {synced:#?}\n{}",
            log_tail(&agent)
        );
    }
    let base_uids: Vec<String> = {
        let mut uids = Vec::new();
        for member in MEMBERS {
            uids.push(scenario.live(member).await["base"].1.clone());
        }
        uids
    };
    let newer = config_maps(&[("added", "b"), ("base", "a"), ("keep", "b")]);
    let commit_b = repo.commit(&scenario, &newer);
    scenario.converge(&agent, &MEMBERS, &commit_b, &newer).await;

    // The remote goes away: the server stops and its port refuses connections.
    drop(proxy);
    drop(server);
    wait_for(&agent, "the agent reports the failed fetch", || async {
        status(&agent).await["error"]
            .as_str()
            .is_some_and(|error| error.starts_with("fetch:"))
    })
    .await;
    let status_gone = status(&agent).await;
    assert_eq!(status_gone["commit"], commit_b.as_str(), "{status_gone:#}");
    for member in MEMBERS {
        assert!(
            synced_at(&status_gone, member, &commit_b),
            "{member}: {status_gone:#}"
        );
        assert!(
            scenario.holds(member, &newer).await,
            "{member} keeps the last commit while the remote is gone"
        );
    }
    let (ready, _) = tokio::task::block_in_place(|| agent.request("GET", "/readyz", &[], b""));
    assert_eq!(ready, 200, "still serving the last commit");
    let (_, metrics) = tokio::task::block_in_place(|| agent.request("GET", "/metrics", &[], b""));
    let failed_fetches: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("flotilla_git_fetches_total{result=\"error\"} "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(failed_fetches > 0.0, "{metrics}");

    // Meanwhile the branch is rewritten to the older commit; the remote comes back on the
    // same URL.
    repo.force_push(&commit_a);
    let server = GitServer::start(repo.dir.path(), token);
    let _proxy = Proxy::start(
        url.trim_start_matches("http://127.0.0.1:")
            .trim_end_matches("/remote.git")
            .parse()
            .expect("port"),
        server.address,
        Duration::ZERO,
    )
    .await;
    scenario.converge(&agent, &MEMBERS, &commit_a, &older).await;
    let status_back = status(&agent).await;
    assert_eq!(status_back["commit"], commit_a.as_str(), "{status_back:#}");
    assert!(status_back.get("error").is_none(), "{status_back:#}");
    for (member, uid) in MEMBERS.iter().zip(&base_uids) {
        assert_eq!(
            &scenario.live(member).await["base"].1,
            uid,
            "{member}: an object in both commits was never deleted"
        );
    }
    scenario.assert_nothing_else(&older).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_member_does_not_hold_up_the_others_and_converges_later() {
    let clusters = clusters();
    let _shared = clusters.shared().await;
    let scenario = Scenario("fault-slow");
    // Every chunk to and from the victim's apiserver waits 300 ms.
    let run = scenario.start(Some(Duration::from_millis(300)), &[]).await;

    let mut second = numbered("new", 20, "v2");
    second.insert("keep".into(), "v2".into());
    let commit2 = run.repo.commit(&scenario, &second);
    scenario
        .converge(&run.agent, &HEALTHY, &commit2, &second)
        .await;
    let status_then = status(&run.agent).await;
    let victim_then = scenario.holds(VICTIM, &second).await;
    assert!(
        !synced_at(&status_then, VICTIM, &commit2) && !victim_then,
        "the healthy members reached the new commit while the slow one was still behind: {status_then:#}"
    );
    run.victim_catches_up(&scenario, &commit2, &second).await;
    scenario.assert_nothing_else(&second).await;
}
