//! `flotilla plan --capacity` and `render --capacity`: capacity-based division on a small fleet.

use std::path::Path;
use std::process::{Command, Output};

#[path = "support/hostile.rs"]
mod hostile;

fn flotilla(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(args)
        .output()
        .expect("run flotilla")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const FLEET: &str = r#"apiVersion: fleet.kurator.dev/v1alpha1
kind: Fleet
metadata: {name: f, namespace: flotilla-system}
spec:
  clusters: [{name: member1}, {name: member2}, {name: member3}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 12
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          image: nginx
          resources: {requests: {cpu: 500m, memory: 1Gi}}
---
apiVersion: policy.karmada.io/v1alpha1
kind: PropagationPolicy
metadata: {name: web, namespace: shop}
spec:
  resourceSelectors: [{apiVersion: apps/v1, kind: Deployment}]
  placement:
    replicaScheduling: {replicaSchedulingType: Divided, replicaDivisionPreference: Aggregated}
"#;

// Free cpu allows 6, 8 and 10 replicas of 500m; memory and pods allow more.
const CAPACITY: &str = r#"clusters:
  member1:
    allocatable: {cpu: "4", memory: 32Gi, pods: "110"}
    requested:   {cpu: "1", memory: 4Gi,  pods: "10"}
  member2:
    allocatable: {cpu: "8", memory: 32Gi, pods: "110"}
    requested:   {cpu: "4", memory: 4Gi,  pods: "10"}
  member3:
    allocatable: {cpu: "16", memory: 64Gi, pods: "110"}
    requested:   {cpu: "11", memory: 8Gi, pods: "30"}
"#;

/// `<tmp>/fleet/fleet.yaml` and, outside the fleet path (every YAML file there is rendered),
/// `<tmp>/capacity.yaml`.
fn fleet(capacity: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("fleet")).unwrap();
    std::fs::write(dir.path().join("fleet/fleet.yaml"), FLEET).unwrap();
    std::fs::write(dir.path().join("capacity.yaml"), capacity).unwrap();
    dir
}

fn path(dir: &Path, file: &str) -> String {
    dir.join(file).to_str().unwrap().to_string()
}

#[test]
fn plan_with_capacity_aggregates_on_the_fewest_clusters() {
    let dir = fleet(CAPACITY);
    let root = &path(dir.path(), "fleet");
    let capacity = path(dir.path(), "capacity.yaml");
    let out = flotilla(&["plan", root, "--capacity", &capacity]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // Karmada's "replica 12, aggregated 6:8:10": the two largest, 12 by 10:8.
    let table = text(&out.stdout);
    assert!(table.contains("member2=5 member3=7"), "{table}");

    let json = flotilla(&["plan", root, "--capacity", &capacity, "--output", "json"]);
    let plan: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        plan["resources"][0]["targets"],
        serde_json::json!([
            {"cluster": "member2", "replicas": 5},
            {"cluster": "member3", "replicas": 7},
        ])
    );

    let render = flotilla(&[
        "render",
        root,
        "--capacity",
        &capacity,
        "--cluster",
        "member3",
    ]);
    assert_eq!(render.status.code(), Some(0), "{}", text(&render.stderr));
    assert!(
        text(&render.stdout).contains("replicas: 7"),
        "{}",
        text(&render.stdout)
    );
}

#[test]
fn plan_without_capacity_fails_the_resource_and_says_what_to_give() {
    let dir = fleet(CAPACITY);
    let out = flotilla(&["plan", &path(dir.path(), "fleet")]);
    assert_eq!(out.status.code(), Some(1));
    let table = text(&out.stdout);
    assert!(table.contains("--capacity FILE"), "{table}");
}

#[test]
fn too_little_capacity_fails_the_resource_as_karmada_does() {
    let dir = fleet("clusters:\n  member1: {allocatable: {cpu: \"2\", memory: 8Gi, pods: 110}}\n");
    let capacity = path(dir.path(), "capacity.yaml");
    let out = flotilla(&["plan", &path(dir.path(), "fleet"), "--capacity", &capacity]);
    assert_eq!(out.status.code(), Some(1));
    let table = text(&out.stdout);
    assert!(
        table.contains("available replicas 4 are not enough to schedule 12"),
        "{table}"
    );
}

#[test]
fn bad_capacity_file_exits_2_naming_file_cluster_and_field() {
    let dir = fleet("clusters:\n  member2:\n    allocatable: {pods: 110, cpu: 8 cores}\n");
    let capacity = path(dir.path(), "capacity.yaml");
    let out = flotilla(&["plan", &path(dir.path(), "fleet"), "--capacity", &capacity]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("capacity.yaml: cluster member2: allocatable.cpu: \"8 cores\""),
        "{stderr}"
    );
}

#[test]
fn a_capacity_file_that_is_no_regular_file_or_an_alias_bomb_fails_at_once() {
    // `--capacity /dev/zero` read until memory ran out (1 GiB and counting); a FIFO blocked
    // forever; an alias bomb was expanded to the parser's node budget, with a multi-line
    // snippet. Each is now exit 2 at once, naming the file in one line.
    let dir = fleet(CAPACITY);
    let fleet_path = path(dir.path(), "fleet");
    let fifo = dir.path().join("capacity.fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let bomb = hostile::alias_bomb();
    std::fs::write(dir.path().join("bomb.yaml"), bomb).unwrap();
    for (file, problem) in [
        ("/dev/zero".to_string(), "not a regular file"),
        (fifo.to_str().unwrap().to_string(), "not a regular file"),
        (path(dir.path(), "bomb.yaml"), "alias replay limit"),
    ] {
        let out = flotilla(&["plan", &fleet_path, "--capacity", &file]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file}: {stderr}");
        assert!(
            stderr.contains(&file) && stderr.contains(problem),
            "{file}: {stderr}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "{file}: {stderr}");
    }
}
