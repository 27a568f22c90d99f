//! `just bench`: failover and Lease takeover on real apiservers (DESIGN.md section 6), with
//! the default thresholds (probes every 2 s, NotReady after 3 failures, Ready after 5 good
//! probes; Leases of 15 s).
//!
//! 1. Failover: a Divided Deployment (6 replicas over 3 clusters); one member apiserver is
//!    killed; the time until the other two hold its replicas (3/3). Target <= 15 s.
//! 2. Takeover: two replicas share the clusters through shard Leases; the one holding clusters
//!    is SIGKILLed (and, separately, stopped with SIGTERM); the time until the survivor syncs
//!    every cluster.

#[path = "../tests/e2e/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use harness::{Agent, Clusters};
use serde_json::Value;

const ROUNDS: usize = 3;
const MEMBERS: [&str; 3] = ["fo-1", "fo-2", "fo-3"];

fn main() {
    let mut names = vec!["hub"];
    names.extend(MEMBERS);
    let clusters = Clusters::start(&names);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    // deploy/'s namespace, where the Leases and Events go.
    runtime.block_on(async {
        let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
            kube::Api::all(clusters.client("hub").await);
        let namespace = serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
                                           "metadata": {"name": "flotilla-system"}});
        namespaces
            .patch(
                "flotilla-system",
                &kube::api::PatchParams::apply("bench"),
                &kube::api::Patch::Apply(namespace),
            )
            .await
            .expect("flotilla-system namespace");
    });
    let only = std::env::var("FLOTILLA_BENCH_ONLY").unwrap_or_default();
    if only != "takeover" {
        failover(&clusters, &runtime);
    }
    if only != "failover" {
        takeover(&clusters);
    }
}

fn fleet(resources: &str) -> String {
    format!(
        "apiVersion: fleet.kurator.dev/v1alpha1\nkind: Fleet\nmetadata: {{name: fleet, namespace: flotilla-system}}\nspec:\n  clusters: [{{name: fo-1}}, {{name: fo-2}}, {{name: fo-3}}]\n---\n{resources}"
    )
}

/// `flotilla run` on a fleet directory: members from the kubeconfig, the hub (its current
/// context) for Leases and Events.
fn agent(clusters: &Clusters, path: &str, name: &str, identity: Option<&str>) -> Agent {
    let kubeconfig = clusters.kubeconfig.display().to_string();
    let mut args = vec![
        "--path",
        path,
        "--kubeconfig",
        &kubeconfig,
        "--hub-kubeconfig",
        &kubeconfig,
        "--namespace",
        "flotilla-system",
        "--name",
        name,
    ];
    args.extend(
        identity
            .iter()
            .flat_map(|identity| ["--identity", identity]),
    );
    Agent::start(&args)
}

fn replicas(clusters: &Clusters, runtime: &tokio::runtime::Runtime) -> Vec<Option<i64>> {
    runtime.block_on(async {
        let mut all = Vec::new();
        for member in MEMBERS {
            let client = clusters.client(member).await;
            let api: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
                kube::Api::namespaced(client, "bench-fo");
            let replicas = match api.get_opt("web").await {
                Ok(Some(d)) => d.spec.replicas.map(i64::from),
                _ => None,
            };
            all.push(replicas);
        }
        all
    })
}

fn wait(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what}: not after {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    started.elapsed()
}

fn failover(clusters: &Clusters, runtime: &tokio::runtime::Runtime) {
    let dir = harness::write_fleet(&[(
        "fleet.yaml",
        &harness::divided_web_fleet(&MEMBERS, "bench-fo"),
    )]);
    let path = dir.path().display().to_string();
    let _agent = agent(clusters, &path, "bench-fo", None);
    let planned = [Some(2), Some(2), Some(2)];
    wait("the planned division", Duration::from_secs(120), || {
        replicas(clusters, runtime) == planned
    });
    let mut failovers = Vec::new();
    let mut restores = Vec::new();
    for round in 1..=ROUNDS {
        clusters.stop("fo-3");
        let took = wait("failover", Duration::from_secs(60), || {
            let now = replicas(clusters, runtime);
            now[0] == Some(3) && now[1] == Some(3)
        });
        clusters.start_again("fo-3");
        let restored = wait("restore", Duration::from_secs(90), || {
            replicas(clusters, runtime) == planned
        });
        println!(
            "failover round {round}: replicas on the others {took:.1?} after the apiserver died; planned division back {restored:.1?} after it was ready again"
        );
        failovers.push(took);
        restores.push(restored);
    }
    failovers.sort();
    restores.sort();
    println!(
        "failover (apiserver killed -> replicas applied elsewhere), {ROUNDS} rounds: median {:.1?}, max {:.1?}; restore after ready: median {:.1?}",
        failovers[ROUNDS / 2],
        failovers[ROUNDS - 1],
        restores[ROUNDS / 2]
    );
}

fn synced_here(agent: &Agent) -> BTreeSet<String> {
    // A replica just started may not listen yet.
    if std::net::TcpStream::connect(("127.0.0.1", agent.port)).is_err() {
        return BTreeSet::new();
    }
    let (code, body) = agent.request("GET", "/status", &[], b"");
    if code != 200 {
        return BTreeSet::new();
    }
    let status: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let current = status["commit"].clone();
    status["clusters"]
        .as_object()
        .map(|clusters| {
            clusters
                .iter()
                .filter(|(_, v)| {
                    v["synced_here"] == true && v["status"] == "synced" && v["commit"] == current
                })
                .map(|(name, _)| name.clone())
                .collect()
        })
        .unwrap_or_default()
}

fn takeover(clusters: &Clusters) {
    let dir = harness::write_fleet(&[(
        "fleet.yaml",
        &fleet(
            r#"apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: bench-ha}
data: {version: "1"}
---
apiVersion: policy.karmada.io/v1alpha1
kind: PropagationPolicy
metadata: {name: settings, namespace: bench-ha}
spec:
  resourceSelectors: [{apiVersion: v1, kind: ConfigMap}]
  placement: {}
"#,
        ),
    )]);
    let path = dir.path().display().to_string();
    let start = |identity: &str| agent(clusters, &path, "bench-ha", Some(identity));
    let mut replicas = vec![start("bench-0"), start("bench-1")];
    let all: BTreeSet<String> = MEMBERS.iter().map(|m| m.to_string()).collect();
    for (round, signal) in ["KILL", "KILL", "KILL", "TERM", "TERM", "TERM"]
        .into_iter()
        .enumerate()
    {
        // Both replicas up and every cluster synced by one of them.
        wait("clusters shared", Duration::from_secs(120), || {
            let a = synced_here(&replicas[0]);
            let b = synced_here(&replicas[1]);
            a.is_disjoint(&b) && a.union(&b).cloned().collect::<BTreeSet<_>>() == all
        });
        let victim = if synced_here(&replicas[0]).is_empty() {
            1
        } else {
            0
        };
        let held = synced_here(&replicas[victim]);
        let mut stopped = replicas.remove(victim);
        let pid = stopped.child.id().to_string();
        let _ = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status();
        let killed = Instant::now();
        let _ = stopped.child.wait();
        let took = wait("takeover", Duration::from_secs(60), || {
            synced_here(&replicas[0]) == all
        });
        println!(
            "takeover round {}: SIG{signal} to the replica syncing {held:?}; the survivor synced them {took:.1?} later",
            round + 1
        );
        let _ = killed;
        drop(stopped);
        replicas.push(start(&format!("bench-{}", round + 2)));
    }
}
