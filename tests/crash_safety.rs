//! Crash safety and restarts, end to end on a real apiserver: the agent (`flotilla run`)
//! SIGKILLed at several points of a sync still prunes everything it created once the app
//! leaves Git, and never what existed before it; a restarted agent corrects (or reports, as
//! the object asks) drift that happened while it was down, in its first sync. One member
//! cluster of its own serves this binary's tests.

#[path = "e2e/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use harness::{Agent, Clusters, git, web_deployment};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::{Value, json};

const MEMBER: &str = "crash-member";

/// This binary's member cluster, started on first use.
fn member() -> &'static Clusters {
    static CLUSTERS: OnceLock<Clusters> = OnceLock::new();
    CLUSTERS.get_or_init(|| Clusters::start(&[MEMBER]))
}

/// The Fleet of one member cluster, every object placed on it.
const FLEET: &str = r#"apiVersion: fleet.kurator.dev/v1alpha1
kind: Fleet
metadata: {name: fleet, namespace: flotilla-system}
spec:
  clusters: [{name: crash-member, kind: AttachedCluster}]
  placement: {}
"#;

/// Names (without namespace) of the objects in `namespace` labelled with `sync_name`.
async fn labelled_config_maps(namespace: &str, sync_name: &str) -> BTreeSet<String> {
    let api: Api<ConfigMap> = Api::namespaced(member().client(MEMBER).await, namespace);
    let params = ListParams::default().labels(&format!("flotilla.dev/inventory={sync_name}"));
    api.list(&params)
        .await
        .expect("list ConfigMaps")
        .items
        .into_iter()
        .filter_map(|cm| cm.metadata.name)
        .collect()
}

fn commit_and_push(work: &Path, remote: &Path, fleet: &str, message: &str) {
    std::fs::write(work.join("fleet.yaml"), fleet).expect("write fleet");
    git(work, &["add", "."]);
    git(work, &["commit", "-q", "-m", message]);
    let remote = remote.to_str().expect("utf-8");
    git(work, &["push", "-q", "-f", remote, "HEAD:main"]);
}

/// Polls `done` every 50 ms for up to `seconds`; panics with `what` when it never holds.
async fn wait_for<F, Fut>(seconds: u64, what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(seconds);
    while std::time::Instant::now() < deadline {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not after {seconds} s");
}

fn cluster_status(agent: &Agent) -> Value {
    let status = tokio::task::block_in_place(|| agent.status());
    status["clusters"][MEMBER].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_killed_mid_sync_leaves_everything_it_created_prunable_and_nothing_else() {
    let clusters = member();
    let namespace = "crash";
    let sync_name = "crash";
    let client = clusters.client(MEMBER).await;
    // What existed before Flotilla: the namespace and one ConfigMap that Git declares too.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": namespace}})).expect("ns"),
        )
        .await
        .expect("create the namespace");
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let preexisting = config_maps
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "preexisting"},
                                           "data": {"owner": "someone else"}}))
            .expect("cm"),
        )
        .await
        .expect("create the pre-existing ConfigMap");

    // The app: the pre-existing ConfigMap and namespace, and 500 ConfigMaps to create (enough
    // that the kills below land mid-sync on a fast apiserver too).
    const CREATED: usize = 500;
    let mut app = format!(
        "{FLEET}---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {namespace}}}\n\
         ---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: preexisting, namespace: {namespace}}}\n\
         data: {{owner: flotilla}}\n"
    );
    for index in 0..CREATED {
        app.push_str(&format!(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: made-{index:04}, namespace: {namespace}}}\ndata: {{index: \"{index}\"}}\n"
        ));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (remote, work) = harness::git_remote_and_work(dir.path());
    commit_and_push(&work, &remote, &app, "app");
    let repo_url = format!("file://{}", remote.display());
    let kubeconfig = clusters.kubeconfig.to_string_lossy().into_owned();
    let cache = dir.path().join("cache");
    let args = [
        "--repo",
        &repo_url,
        "--kubeconfig",
        &kubeconfig,
        "--interval",
        "1s",
        // One apply at a time: a sync lasts long enough to be killed in the middle.
        "--concurrency",
        "1",
        "--cache-dir",
        cache.to_str().expect("utf-8"),
        "--name",
        sync_name,
    ];
    let made = || async {
        labelled_config_maps(namespace, sync_name)
            .await
            .into_iter()
            .filter(|name| name.starts_with("made-"))
            .count()
    };

    // SIGKILL after the first object appears, then 40 and 80 more: each restart resumes the
    // sync the last one was killed in.
    for more in [1, 40, 80] {
        let before = made().await;
        let mut agent = Agent::start(&args);
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while made().await < before + more {
            assert!(
                std::time::Instant::now() < deadline,
                "{more} more objects created: not after 120 s"
            );
            // Polled as often as a list allows, to kill close after the point.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        agent.child.kill().expect("SIGKILL the agent");
        agent.child.wait().expect("reap the agent");
        let at_kill = made().await;
        assert!(
            at_kill < CREATED,
            "the agent was to be killed mid-sync, but all {CREATED} objects were there"
        );
    }

    // A last agent finishes the sync.
    let agent = Agent::start(&args);
    wait_for(
        180,
        "every object applied and the cluster synced",
        || async { made().await == CREATED && cluster_status(&agent)["status"] == "synced" },
    )
    .await;

    // The app leaves Git: everything the agents created goes, nothing that existed before.
    commit_and_push(&work, &remote, FLEET, "the app leaves");
    wait_for(180, "every created ConfigMap pruned", || async {
        made().await == 0
    })
    .await;
    let kept = config_maps
        .get_opt("preexisting")
        .await
        .expect("GET the pre-existing ConfigMap")
        .expect("the pre-existing ConfigMap is never pruned");
    assert_eq!(
        kept.metadata.uid, preexisting.metadata.uid,
        "the very same object"
    );
    assert!(
        namespaces
            .get_opt(namespace)
            .await
            .expect("GET the namespace")
            .is_some_and(|ns| ns.metadata.deletion_timestamp.is_none()),
        "the pre-existing namespace stays"
    );
    let status = cluster_status(&agent);
    assert_eq!(status["status"], "synced", "{status}");
    assert!(
        status["pruned"].as_u64().is_some_and(|pruned| pruned >= 1),
        "{status}"
    );
}

/// The app of the drift test: `web` corrects drift, `quiet` asks to be reported only.
fn drift_app(namespace: &str) -> String {
    format!(
        "{FLEET}---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {namespace}}}\n{}{}",
        web_deployment(namespace, "web", 2, "nginx:1.25", ""),
        web_deployment(
            namespace,
            "quiet",
            2,
            "nginx:1.25",
            "flotilla.dev/drift: report"
        )
    )
}

async fn replicas(namespace: &str, name: &str) -> Option<i32> {
    let api: Api<Deployment> = Api::namespaced(member().client(MEMBER).await, namespace);
    api.get_opt(name)
        .await
        .expect("GET deployment")
        .and_then(|deployment| deployment.spec.replicas)
}

/// The drift entries of `/status` for one object name: (fields, corrected).
fn drift_of(status: &Value, name: &str) -> Vec<(Value, bool)> {
    status["drift"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|entry| entry["object"]["name"] == name)
        .map(|entry| {
            (
                entry["fields"].clone(),
                entry["corrected"] == Value::Bool(true),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_agent_corrects_drift_made_while_it_was_down_in_its_first_sync() {
    let clusters = member();
    let namespace = "drift-at-start";
    let fleet = harness::write_fleet(&[("fleet.yaml", &drift_app(namespace))]);
    let kubeconfig = clusters.kubeconfig.to_string_lossy().into_owned();
    let args = [
        "--path",
        fleet.path().to_str().expect("utf-8"),
        "--kubeconfig",
        &kubeconfig,
        // No poll: only the first sync (and the drift watch) can correct anything.
        "--interval",
        "1h",
        "--name",
        "drift-at-start",
    ];
    let agent = Agent::start(&args);
    wait_for(120, "the first agent synced", || async {
        cluster_status(&agent)["status"] == "synced"
            && replicas(namespace, "web").await == Some(2)
            && replicas(namespace, "quiet").await == Some(2)
    })
    .await;
    drop(agent);

    // While no agent runs, both are scaled.
    for name in ["web", "quiet"] {
        let output = std::process::Command::new(clusters.kubectl())
            .args(["--kubeconfig", &kubeconfig, "--context", MEMBER])
            .args(["-n", namespace, "scale", "deployment", name, "--replicas=5"])
            .output()
            .expect("kubectl scale");
        assert!(
            output.status.success(),
            "kubectl scale {name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(replicas(namespace, name).await, Some(5));
    }

    let agent = Agent::start(&args);
    wait_for(120, "the restarted agent's first sync", || async {
        cluster_status(&agent)["status"] == "synced"
    })
    .await;
    // The first sync is done: what it did not correct, nothing will (the watch starts from
    // what it finds, and there is no poll).
    assert_eq!(
        replicas(namespace, "web").await,
        Some(2),
        "drift made while the agent was down is corrected in its first sync"
    );
    assert_eq!(
        replicas(namespace, "quiet").await,
        Some(5),
        "an object annotated flotilla.dev/drift: report is not corrected"
    );
    wait_for(30, "both drifts in /status", || async {
        let status = cluster_status(&agent);
        !drift_of(&status, "web").is_empty() && !drift_of(&status, "quiet").is_empty()
    })
    .await;
    let status = cluster_status(&agent);
    assert_eq!(
        drift_of(&status, "web"),
        [(json!(["spec.replicas"]), true)],
        "{status}"
    );
    assert_eq!(
        drift_of(&status, "quiet"),
        [(json!(["spec.replicas"]), false)],
        "{status}"
    );
}
