//! `just bench`: `flotilla sync --once` against `kubectl apply --server-side`, side by side on
//! the same real apiservers (5 clusters x 50 objects, DESIGN.md section 6).
//!
//! Each tool gets its own copy of the objects (other namespaces), rendered by `flotilla
//! render --out`; kubectl applies them cluster by cluster, as a user scripting it would.
//! Both run as fresh processes with warm discovery caches, in rounds that alternate which tool
//! goes first, each after the controller-managers have finished reacting to the previous
//! one. The no-op re-sync is measured in time and in write requests, counted by each
//! apiserver (`apiserver_request_total`).
//! Targets: first apply >= 5x faster than kubectl; no-op re-sync 0 writes.

#[path = "../tests/e2e/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use harness::{Clusters, writes};

const CLUSTERS: [&str; 5] = ["bench-1", "bench-2", "bench-3", "bench-4", "bench-5"];
/// Objects per cluster: a Namespace, then ConfigMaps, Deployments and Services.
const OBJECTS: usize = 50;
/// Rounds of both tools; the medians are reported.
const ROUNDS: usize = 3;

fn main() {
    let clusters = Clusters::start(&CLUSTERS);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let kubeconfig = clusters.kubeconfig.to_string_lossy().into_owned();

    // Warm both tools' paths: kubectl's discovery cache, and each apiserver's first requests.
    for cluster in CLUSTERS {
        run(Command::new(clusters.kubectl()).args([
            "--kubeconfig",
            &kubeconfig,
            "--context",
            cluster,
            "api-resources",
            "-o",
            "name",
        ]));
    }
    let count_writes = || {
        runtime.block_on(async {
            let mut total = 0.0;
            for cluster in CLUSTERS {
                total += writes(&clusters.requests_by_verb(cluster).await);
            }
            total
        })
    };

    // Each round applies new objects (new namespaces) with both tools, alternating which goes
    // first, and lets the controller-managers finish reacting before the next measurement.
    let mut rounds = Vec::new();
    for round in 0..ROUNDS {
        let flotilla_fleet = tempfile::tempdir().expect("tempdir");
        write_fleet(flotilla_fleet.path(), &format!("flotilla-bench-{round}"));
        let kubectl_fleet = tempfile::tempdir().expect("tempdir");
        write_fleet(kubectl_fleet.path(), &format!("kubectl-bench-{round}"));
        let out = kubectl_fleet.path().join("out");
        run(Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .arg("render")
            .arg(kubectl_fleet.path())
            .arg("--out")
            .arg(&out));
        let sync_name = format!("bench-{round}");
        let flotilla_sync = || {
            let started = Instant::now();
            run(Command::new(env!("CARGO_BIN_EXE_flotilla"))
                .args(["sync", "--once"])
                .arg(flotilla_fleet.path())
                .args(["--kubeconfig", &kubeconfig, "--name", &sync_name])
                .env("FLOTILLA_LOG", "warn"));
            started.elapsed()
        };
        let kubectl_apply = || {
            let started = Instant::now();
            for cluster in CLUSTERS {
                run(Command::new(clusters.kubectl())
                    .args(["--kubeconfig", &kubeconfig, "--context", cluster])
                    .args(["apply", "--server-side", "--field-manager", "kubectl-bench"])
                    .args(["-R", "-f"])
                    .arg(out.join(cluster)));
            }
            started.elapsed()
        };

        settle(&count_writes);
        let (flotilla_first, kubectl_first) = if round % 2 == 0 {
            let kubectl = kubectl_apply();
            settle(&count_writes);
            (flotilla_sync(), kubectl)
        } else {
            let flotilla = flotilla_sync();
            settle(&count_writes);
            (flotilla, kubectl_apply())
        };
        let settled = settle(&count_writes);
        let flotilla_noop = flotilla_sync();
        let flotilla_noop_writes = count_writes() - settled;
        let settled = settle(&count_writes);
        let kubectl_again = kubectl_apply();
        let kubectl_again_writes = count_writes() - settled;
        rounds.push(Round {
            flotilla_first,
            kubectl_first,
            flotilla_noop,
            flotilla_noop_writes,
            kubectl_again,
            kubectl_again_writes,
        });
    }

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = |pick: &dyn Fn(&Round) -> Duration| {
        let mut values: Vec<Duration> = rounds.iter().map(pick).collect();
        values.sort();
        values[values.len() / 2]
    };
    println!(
        "sync of {} clusters x {OBJECTS} objects, same apiservers, {ROUNDS} rounds:",
        CLUSTERS.len()
    );
    for (i, round) in rounds.iter().enumerate() {
        println!(
            "  round {i}: first apply flotilla {:>5.0} ms, kubectl {:>5.0} ms ({:.1}x); no-op flotilla {:>4.0} ms / {} writes, kubectl {:>5.0} ms / {} writes",
            ms(round.flotilla_first),
            ms(round.kubectl_first),
            round.kubectl_first.as_secs_f64() / round.flotilla_first.as_secs_f64(),
            ms(round.flotilla_noop),
            round.flotilla_noop_writes,
            ms(round.kubectl_again),
            round.kubectl_again_writes,
        );
    }
    let (flotilla_first, kubectl_first) =
        (median(&|r| r.flotilla_first), median(&|r| r.kubectl_first));
    let (flotilla_noop, kubectl_again) =
        (median(&|r| r.flotilla_noop), median(&|r| r.kubectl_again));
    let noop_writes: f64 = rounds.iter().map(|r| r.flotilla_noop_writes).sum();
    println!(
        "  median first apply:  flotilla {:>5.0} ms   kubectl apply --server-side (cluster by cluster) {:>5.0} ms   kubectl/flotilla {:.1}x (target >= 5x)",
        ms(flotilla_first),
        ms(kubectl_first),
        kubectl_first.as_secs_f64() / flotilla_first.as_secs_f64()
    );
    println!(
        "  median re-sync, nothing changed:  flotilla {:>4.0} ms, {noop_writes} writes in all rounds (target 0)   kubectl {:>5.0} ms   kubectl/flotilla {:.1}x",
        ms(flotilla_noop),
        ms(kubectl_again),
        kubectl_again.as_secs_f64() / flotilla_noop.as_secs_f64()
    );
}

struct Round {
    flotilla_first: Duration,
    kubectl_first: Duration,
    flotilla_noop: Duration,
    flotilla_noop_writes: f64,
    kubectl_again: Duration,
    kubectl_again_writes: f64,
}

/// Waits until the apiservers count no new write for two seconds; returns the count.
fn settle(count_writes: &dyn Fn() -> f64) -> f64 {
    let mut last = count_writes();
    for _ in 0..60 {
        std::thread::sleep(Duration::from_secs(2));
        let now = count_writes();
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("the apiservers kept counting writes for two minutes");
}

fn run(command: &mut Command) {
    let output = command.output().expect("running a command");
    assert!(
        output.status.success(),
        "{command:?}: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A fleet of the bench clusters where every cluster gets the same 50 objects in `namespace`.
fn write_fleet(dir: &Path, namespace: &str) {
    let mut fleet = String::from(
        "apiVersion: fleet.kurator.dev/v1alpha1\nkind: Fleet\nmetadata: {name: bench, namespace: flotilla-system}\nspec:\n  placement: {}\n  clusters:\n",
    );
    for cluster in CLUSTERS {
        writeln!(fleet, "    - {{name: {cluster}, kind: AttachedCluster}}").unwrap();
    }
    let mut apps = format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {namespace}}}\n");
    let per_kind = (OBJECTS - 1) / 3;
    for i in 0..per_kind {
        write!(
            apps,
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: config-{i}, namespace: {namespace}}}\ndata: {{index: \"{i}\", level: info}}\n"
        )
        .unwrap();
        write!(
            apps,
            "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: app-{i}, namespace: {namespace}}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: app-{i}}}}}\n  template:\n    metadata: {{labels: {{app: app-{i}}}}}\n    spec:\n      containers:\n        - name: app\n          image: registry.example.com/app:{i}\n          ports: [{{containerPort: 8080, protocol: TCP}}]\n"
        )
        .unwrap();
        write!(
            apps,
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: app-{i}, namespace: {namespace}}}\nspec:\n  selector: {{app: app-{i}}}\n  ports: [{{port: 80, targetPort: 8080, protocol: TCP}}]\n"
        )
        .unwrap();
    }
    for i in 3 * per_kind..OBJECTS - 1 {
        write!(
            apps,
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: extra-{i}, namespace: {namespace}}}\ndata: {{index: \"{i}\"}}\n"
        )
        .unwrap();
    }
    std::fs::write(dir.join("fleet.yaml"), fleet).expect("write fleet");
    std::fs::write(dir.join("apps.yaml"), apps).expect("write apps");
}
