//! End-to-end: the plan applied to real kube-apiservers (started by `tests/e2e/clusters.sh`).

#[path = "e2e/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use flotilla::apply::{
    ClusterReport, ClusterStatus, SyncOptions, apply_fleet, member::connect_all,
};
use flotilla::placement::{Plan, plan};
use flotilla::render::render_tree;
use harness::{
    Agent, MEMBERS, clusters, flotilla, free_port, git, github_signature, http_request,
    labelled_objects, web_deployment, write_fleet, writes,
};
use serde_json::Value;

fn plan_of(root: &Path) -> Plan {
    let rendered = render_tree(root, Path::new(".")).expect("render");
    plan(&rendered).expect("plan")
}

async fn sync(root: &Path, name: &str) -> (Plan, Vec<ClusterReport>) {
    let plan = plan_of(root);
    let names: Vec<String> = plan.desired.keys().cloned().collect();
    let members = connect_all(&clusters().kubeconfig, &names)
        .await
        .expect("kubeconfig");
    let options = SyncOptions {
        name: name.into(),
        ..SyncOptions::default()
    };
    let reports = apply_fleet(&plan, None, &members, &options, |_| {}).await;
    (plan, reports)
}

fn report<'a>(reports: &'a [ClusterReport], cluster: &str) -> &'a ClusterReport {
    reports
        .iter()
        .find(|report| report.cluster == cluster)
        .unwrap_or_else(|| panic!("no report for {cluster}"))
}

fn assert_all_synced(reports: &[ClusterReport]) {
    for report in reports {
        assert_eq!(
            report.status,
            ClusterStatus::Synced,
            "{}: {:?} {:?}",
            report.cluster,
            report.error,
            report.failed
        );
    }
}

/// "Kind namespace/name" of a planned object, as `labelled_objects` keys it.
fn key(object: &flotilla::object::Object) -> String {
    format!("{} {}/{}", object.kind(), object.namespace(), object.name())
}

fn pod_containers(object: &Value) -> Vec<(String, String, Value)> {
    object
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|container| {
            (
                container["name"].as_str().unwrap_or_default().to_string(),
                container["image"].as_str().unwrap_or_default().to_string(),
                container.get("args").cloned().unwrap_or(Value::Null),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn example_fleet_applies_exactly_as_planned_with_crds_and_custom_resources() {
    let clusters = clusters();
    let _shared = clusters.shared().await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/fleet-repo");
    let (plan, reports) = sync(&root, "example").await;
    assert_all_synced(&reports);

    let mut custom_resources = BTreeSet::new();
    for cluster in MEMBERS {
        let client = clusters.client(cluster).await;
        let live = labelled_objects(&client, "example").await;
        let planned = &plan.desired[cluster];
        let planned_keys: BTreeSet<String> = planned.iter().map(key).collect();
        let live_keys: BTreeSet<String> = live.keys().cloned().collect();
        assert_eq!(live_keys, planned_keys, "{cluster} holds exactly its plan");
        for object in planned {
            let live = &live[&key(object)];
            if object.kind() == "Deployment" {
                assert_eq!(
                    live.pointer("/spec/replicas"),
                    object.value.pointer("/spec/replicas"),
                    "{cluster} {}",
                    key(object)
                );
                assert_eq!(
                    pod_containers(live),
                    pod_containers(&object.value),
                    "{cluster} {}: images and args",
                    key(object)
                );
            }
            if matches!(object.kind(), "VirtualService" | "CephBlockPool") {
                assert_eq!(live.get("spec"), object.value.get("spec"), "{cluster}");
                custom_resources.insert(object.kind().to_string());
            }
        }
    }
    assert_eq!(
        custom_resources,
        BTreeSet::from(["CephBlockPool".to_string(), "VirtualService".to_string()]),
        "the CRDs and their custom resources came in one sync"
    );
    // The documented figures, checked live: nginx 6/4.
    let replicas = |cluster: &str| {
        plan.desired[cluster]
            .iter()
            .find(|o| o.kind() == "Deployment" && o.name() == "nginx")
            .and_then(|o| o.value.pointer("/spec/replicas").cloned())
    };
    assert_eq!(replicas("cluster-hangzhou"), Some(6.into()));
    assert_eq!(replicas("cluster-shanghai"), Some(4.into()));
}

/// A fleet of three of the members with one app divided by weight, a ConfigMap kept from
/// pruning by annotation, and a ConfigMap that existed before Flotilla.
fn weighted_fleet(namespace: &str, weights: Option<(u32, u32)>) -> tempfile::TempDir {
    let fleet = r#"
apiVersion: fleet.kurator.dev/v1alpha1
kind: Fleet
metadata: {name: weights, namespace: flotilla-system}
spec:
  clusters:
    - {name: cluster-hangzhou, kind: AttachedCluster}
    - {name: cluster-shanghai, kind: AttachedCluster}
    - {name: cluster-frankfurt, kind: AttachedCluster}
"#;
    let mut files = vec![("fleet.yaml", fleet.to_string())];
    if let Some((a, b)) = weights {
        files.push((
            "app.yaml",
            format!(
                r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {namespace}}}
spec:
  replicas: 10
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
        - name: web
          image: nginx:1.27.3
          ports: [{{containerPort: 80}}]
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: keep-me
  namespace: {namespace}
  annotations: {{flotilla.dev/prune: disabled}}
data: {{a: "1"}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: pre-existing, namespace: {namespace}}}
data: {{owner: flotilla-now}}
---
apiVersion: policy.karmada.io/v1alpha1
kind: PropagationPolicy
metadata: {{name: web, namespace: {namespace}}}
spec:
  resourceSelectors:
    - {{apiVersion: apps/v1, kind: Deployment, name: web}}
    - {{apiVersion: v1, kind: ConfigMap}}
  placement:
    clusterAffinity:
      clusterNames: [cluster-hangzhou, cluster-shanghai, cluster-frankfurt]
    replicaScheduling:
      replicaSchedulingType: Divided
      replicaDivisionPreference: Weighted
      weightPreference:
        staticWeightList:
          - {{targetCluster: {{clusterNames: [cluster-hangzhou]}}, weight: {a}}}
          - {{targetCluster: {{clusterNames: [cluster-shanghai]}}, weight: {b}}}
"#
            ),
        ));
    }
    let files: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    write_fleet(&files)
}

async fn deployment_replicas(cluster: &str, namespace: &str, name: &str) -> Option<i64> {
    let client = clusters().client(cluster).await;
    let api: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(client, namespace);
    api.get_opt(name)
        .await
        .expect("GET deployment")
        .and_then(|d| d.spec.replicas.map(i64::from))
}

async fn config_map_exists(cluster: &str, namespace: &str, name: &str) -> bool {
    let client = clusters().client(cluster).await;
    let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client, namespace);
    api.get_opt(name).await.expect("GET configmap").is_some()
}

#[tokio::test(flavor = "multi_thread")]
async fn changing_weights_moves_replicas_and_removing_the_app_prunes_it_everywhere() {
    let clusters = clusters();
    let _shared = clusters.shared().await;
    let namespace = "e2e-weights";
    // A ConfigMap someone created before Flotilla managed it: Flotilla adopts it but never
    // deletes it.
    {
        let client = clusters.client("cluster-frankfurt").await;
        let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
            kube::Api::all(client.clone());
        let params = kube::api::PostParams::default();
        let ns = serde_json::from_value(serde_json::json!({"metadata": {"name": namespace}}))
            .expect("namespace");
        namespaces
            .create(&params, &ns)
            .await
            .expect("create namespace");
        let config_maps: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
            kube::Api::namespaced(client, namespace);
        let cm = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "pre-existing"}, "data": {"owner": "someone"}
        }))
        .expect("configmap");
        config_maps
            .create(&params, &cm)
            .await
            .expect("create configmap");
    }

    let fleet = weighted_fleet(namespace, Some((60, 40)));
    let (_, reports) = sync(fleet.path(), "weights").await;
    assert_all_synced(&reports);
    assert_eq!(
        deployment_replicas("cluster-hangzhou", namespace, "web").await,
        Some(6)
    );
    assert_eq!(
        deployment_replicas("cluster-shanghai", namespace, "web").await,
        Some(4)
    );
    assert_eq!(
        deployment_replicas("cluster-frankfurt", namespace, "web").await,
        None
    );

    let fleet = weighted_fleet(namespace, Some((30, 70)));
    let (_, reports) = sync(fleet.path(), "weights").await;
    assert_all_synced(&reports);
    assert_eq!(
        deployment_replicas("cluster-hangzhou", namespace, "web").await,
        Some(3)
    );
    assert_eq!(
        deployment_replicas("cluster-shanghai", namespace, "web").await,
        Some(7)
    );
    let hangzhou = report(&reports, "cluster-hangzhou");
    assert_eq!(
        hangzhou.applied.len(),
        1,
        "only the Deployment changed: {hangzhou:?}"
    );
    assert_eq!(hangzhou.unchanged.len(), 3, "{hangzhou:?}");

    let fleet = weighted_fleet(namespace, None);
    let (_, reports) = sync(fleet.path(), "weights").await;
    assert_all_synced(&reports);
    for cluster in ["cluster-hangzhou", "cluster-shanghai"] {
        assert_eq!(
            deployment_replicas(cluster, namespace, "web").await,
            None,
            "{cluster}"
        );
        assert!(!config_map_exists(cluster, namespace, "pre-existing").await);
        assert!(
            config_map_exists(cluster, namespace, "keep-me").await,
            "{cluster}"
        );
        let report = report(&reports, cluster);
        assert!(
            report.kept.iter().any(|kept| kept.object.name == "keep-me"),
            "{report:?}"
        );
    }
    // Flotilla created the Namespace in hangzhou and shanghai, but it still holds the
    // annotated ConfigMap, so it stays: deleting it would delete that ConfigMap too.
    for cluster in ["cluster-hangzhou", "cluster-shanghai"] {
        let report = report(&reports, cluster);
        assert!(
            report
                .kept
                .iter()
                .any(|kept| kept.object.kind == "Namespace" && kept.reason.contains("keep-me")),
            "{report:?}"
        );
    }
    // In frankfurt the Namespace existed before, so it stays, with the ConfigMap Flotilla did
    // not create.
    assert!(config_map_exists("cluster-frankfurt", namespace, "pre-existing").await);
    let frankfurt = report(&reports, "cluster-frankfurt");
    assert!(
        frankfurt.kept.iter().any(
            |kept| kept.object.name == "pre-existing" && kept.reason.contains("existed before")
        ),
        "{frankfurt:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_sync_of_the_same_commit_sends_no_write_to_any_apiserver() {
    let clusters = clusters();
    // Alone: other tests' writes would show in the same counters.
    let _alone = clusters.exclusive().await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/fleet-repo");
    let kubeconfig = clusters.kubeconfig.to_string_lossy().into_owned();
    let root_arg = root.to_string_lossy().into_owned();
    let sync_args = |force: bool| {
        let mut args = vec![
            "sync",
            "--once",
            root_arg.as_str(),
            "--kubeconfig",
            kubeconfig.as_str(),
            "--name",
            "noop",
        ];
        if force {
            args.push("--force");
        }
        args.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, stdout, stderr) = flotilla(&args);
        assert_eq!(code, 0, "{stdout}\n{stderr}");
        stdout
    };

    // A forced sync writes every object: the counters see Flotilla's writes.
    let before_force = counters(clusters).await;
    run(sync_args(true));
    let after_force = counters(clusters).await;
    let plan = plan_of(&root);
    for cluster in MEMBERS {
        let written = writes(&after_force[cluster]) - writes(&before_force[cluster]);
        assert!(
            written >= plan.desired[cluster].len() as f64,
            "{cluster}: {written} writes counted for {} objects",
            plan.desired[cluster].len()
        );
    }

    // The controller-managers react to the first sync (ReplicaSets, Pods); let them finish.
    let settled = settle(clusters).await;
    let stdout = run(sync_args(false));
    let after = counters(clusters).await;
    for cluster in MEMBERS {
        let written = writes(&after[cluster]) - writes(&settled[cluster]);
        assert_eq!(
            written, 0.0,
            "{cluster}: writes during a no-op sync\n{stdout}"
        );
        let reads = after[cluster].get("GET").copied().unwrap_or(0.0)
            + after[cluster].get("LIST").copied().unwrap_or(0.0)
            - settled[cluster].get("GET").copied().unwrap_or(0.0)
            - settled[cluster].get("LIST").copied().unwrap_or(0.0);
        assert!(reads >= 1.0, "{cluster}: the no-op sync read its inventory");
    }
    assert!(stdout.contains("synced"), "{stdout}");
}

async fn counters(clusters: &harness::Clusters) -> BTreeMap<&'static str, BTreeMap<String, f64>> {
    let mut all = BTreeMap::new();
    for cluster in MEMBERS {
        all.insert(cluster, clusters.requests_by_verb(cluster).await);
    }
    all
}

/// Waits until no apiserver counts a new write for two seconds.
async fn settle(clusters: &harness::Clusters) -> BTreeMap<&'static str, BTreeMap<String, f64>> {
    let mut last = counters(clusters).await;
    for _ in 0..60 {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let now = counters(clusters).await;
        if MEMBERS
            .iter()
            .all(|cluster| writes(&now[cluster]) == writes(&last[cluster]))
        {
            return now;
        }
        last = now;
    }
    panic!("the apiservers kept counting writes for two minutes");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_cluster_is_named_and_the_others_still_sync_then_it_converges() {
    let clusters = clusters();
    let _alone = clusters.exclusive().await;
    let namespace = "e2e-dead";
    let fleet = write_fleet(&[(
        "fleet.yaml",
        &format!(
            r#"
apiVersion: fleet.kurator.dev/v1alpha1
kind: Fleet
metadata: {{name: dead, namespace: flotilla-system}}
spec:
  clusters:
    - {{name: cluster-hangzhou, kind: AttachedCluster}}
    - {{name: spot-cluster, kind: AttachedCluster}}
    - {{name: ondemand-cluster, kind: AttachedCluster}}
  placement: {{}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: settings, namespace: {namespace}}}
data: {{level: info}}
"#
        ),
    )]);
    let kubeconfig = clusters.kubeconfig.to_string_lossy().into_owned();
    let path = fleet.path().to_string_lossy().into_owned();
    let args = [
        "sync",
        "--once",
        path.as_str(),
        "--kubeconfig",
        kubeconfig.as_str(),
        "--name",
        "dead",
    ];

    clusters.stop("spot-cluster");
    // Should an assertion fail, the cluster starts again for the tests after this one.
    struct StartAgain(&'static harness::Clusters);
    impl Drop for StartAgain {
        fn drop(&mut self) {
            if std::thread::panicking() {
                self.0.start_again("spot-cluster");
            }
        }
    }
    let restart_guard = StartAgain(clusters);
    let (code, stdout, stderr) = flotilla(&args);
    assert_eq!(
        code, 1,
        "a failed cluster fails the sync\n{stdout}\n{stderr}"
    );
    let spot_line = stdout
        .lines()
        .find(|line| line.starts_with("spot-cluster "))
        .unwrap_or_else(|| panic!("no row for spot-cluster\n{stdout}"));
    assert!(spot_line.contains("failed"), "{stdout}");
    assert!(stdout.contains("spot-cluster: unreachable"), "{stdout}");
    for cluster in ["cluster-hangzhou", "ondemand-cluster"] {
        assert!(
            config_map_exists(cluster, namespace, "settings").await,
            "{cluster}"
        );
        let row = stdout
            .lines()
            .find(|l| l.starts_with(cluster))
            .expect("row");
        assert!(row.contains("synced"), "{stdout}");
    }

    std::mem::forget(restart_guard);
    clusters.start_again("spot-cluster");
    let (code, stdout, stderr) = flotilla(&args);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(config_map_exists("spot-cluster", namespace, "settings").await);
}

/// A CRD in the style of a batch scheduler's (Volcano's `jobs.batch.volcano.sh`): structural
/// schema, status subresource, defaults. One default does not match its own type, which every
/// apiserver refuses with 422 (`must be of type integer`), as 1.20 refuses Volcano's own CRD.
const REFUSED_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: jobs.batch.example.dev
  annotations:
    helm.sh/resource-policy: keep
spec:
  group: batch.example.dev
  names: {kind: Job, listKind: JobList, plural: jobs, singular: job, shortNames: [exjob]}
  scope: Namespaced
  versions:
    - name: v1alpha1
      served: true
      storage: true
      subresources: {status: {}}
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                minAvailable: {type: integer, format: int32}
                maxRetry: {type: integer, format: int32, default: "three"}
                queue: {type: string, default: default}
                tasks:
                  type: array
                  items:
                    type: object
                    properties:
                      name: {type: string}
                      replicas: {type: integer, format: int32}
                      template: {type: object, x-kubernetes-preserve-unknown-fields: true}
            status:
              type: object
              x-kubernetes-preserve-unknown-fields: true
"#;

#[tokio::test(flavor = "multi_thread")]
async fn diff_shows_a_changed_field_and_a_refused_crd_fails_only_itself() {
    let clusters = clusters();
    let _shared = clusters.shared().await;
    let namespace = "e2e-diff";
    let fleet_yaml = format!(
        r#"{}---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: api, namespace: {namespace}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: api}}}}
  template:
    metadata: {{labels: {{app: api}}}}
    spec:
      containers: [{{name: api, image: "registry.example.com/api:1.0"}}]
"#,
        one_cluster_fleet("diff", "cluster-shanghai")
    );
    let fleet = write_fleet(&[("fleet.yaml", &fleet_yaml), ("crd.yaml", REFUSED_CRD)]);
    let kubeconfig = clusters.kubeconfig.to_string_lossy().into_owned();
    let path = fleet.path().to_string_lossy().into_owned();
    let (code, stdout, stderr) = sync_once(fleet.path(), "diff");
    // Every apiserver refuses this CRD (a default of the wrong type); only it fails, and the
    // Deployment is applied.
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(
        stdout.contains(
            "cluster-shanghai: CustomResourceDefinition.apiextensions.k8s.io/jobs.batch.example.dev: 422"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("degraded"), "{stdout}");
    assert_eq!(
        deployment_replicas("cluster-shanghai", namespace, "api").await,
        Some(2),
        "{stdout}\n{stderr}"
    );

    std::fs::write(
        fleet.path().join("fleet.yaml"),
        fleet_yaml
            .replace("replicas: 2", "replicas: 5")
            .replace("api:1.0", "api:1.1"),
    )
    .expect("edit fleet");
    let (_, diff, stderr) =
        flotilla(&["diff", &path, "--kubeconfig", &kubeconfig, "--name", "diff"]);
    assert!(
        diff.contains("-  replicas: 2\n+  replicas: 5\n"),
        "{diff}\n{stderr}"
    );
    assert!(diff.contains("registry.example.com/api:1.1"), "{diff}");
    assert!(!diff.contains("managedFields"), "{diff}");
    assert!(!diff.contains("resourceVersion"), "{diff}");
    assert!(diff.contains("1 to update"), "{diff}");
    // The diff wrote nothing.
    assert_eq!(
        deployment_replicas("cluster-shanghai", namespace, "api").await,
        Some(2)
    );
}

async fn config_map_level(cluster: &str, namespace: &str) -> Option<String> {
    let client = clusters().client(cluster).await;
    let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client, namespace);
    api.get_opt("settings")
        .await
        .expect("GET configmap")
        .and_then(|cm| cm.data?.get("level").cloned())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_applies_a_pushed_commit_on_a_signed_github_webhook_and_refuses_a_forged_one() {
    let clusters = clusters();
    let _shared = clusters.shared().await;
    let namespace = "e2e-agent";
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, work) = harness::git_remote_and_work(dir.path());
    let fleet = |level: &str| {
        format!(
            r#"apiVersion: fleet.kurator.dev/v1alpha1
kind: Fleet
metadata: {{name: agent, namespace: flotilla-system}}
spec:
  clusters:
    - {{name: cluster-hangzhou, kind: AttachedCluster}}
    - {{name: cluster-frankfurt, kind: AttachedCluster}}
  placement: {{}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: settings, namespace: {namespace}}}
data: {{level: {level}}}
"#
        )
    };
    let push = |level: &str| {
        std::fs::write(work.join("fleet.yaml"), fleet(level)).expect("write");
        git(&work, &["add", "."]);
        git(&work, &["commit", "-q", "-m", level]);
        git(
            &work,
            &[
                "push",
                "-q",
                "-f",
                dir.path().join("remote.git").to_str().expect("utf-8"),
                "HEAD:main",
            ],
        );
        git(&work, &["rev-parse", "HEAD"])
    };
    push("info");
    let secret_file = dir.path().join("github-secret");
    std::fs::write(&secret_file, "webhook-secret\n").expect("write secret");
    let gitlab_file = dir.path().join("gitlab-token");
    std::fs::write(&gitlab_file, "gitlab-token").expect("write token");
    let generic_file = dir.path().join("generic-token");
    std::fs::write(&generic_file, "generic-token").expect("write token");
    let repo_url = format!("file://{}", dir.path().join("remote.git").display());
    let kubeconfig = clusters.kubeconfig.to_string_lossy().into_owned();
    let cache = dir.path().join("cache");
    let agent = Agent::start(&[
        "--repo",
        &repo_url,
        "--kubeconfig",
        &kubeconfig,
        // Only webhooks may trigger the second sync.
        "--interval",
        "1h",
        "--github-secret-file",
        secret_file.to_str().expect("utf-8"),
        "--gitlab-token-file",
        gitlab_file.to_str().expect("utf-8"),
        "--generic-token-file",
        generic_file.to_str().expect("utf-8"),
        "--cache-dir",
        cache.to_str().expect("utf-8"),
        "--name",
        "agent",
    ]);
    tokio::task::block_in_place(|| agent.wait_ready());
    for cluster in ["cluster-hangzhou", "cluster-frankfurt"] {
        assert_eq!(
            config_map_level(cluster, namespace).await.as_deref(),
            Some("info")
        );
    }

    let second = push("debug");
    let body = br#"{"ref":"refs/heads/main","after":"x"}"#;
    let forged = github_signature(b"wrong-secret", body);
    let (code, _) = tokio::task::block_in_place(|| {
        agent.request(
            "POST",
            "/hooks/github",
            &[
                ("X-GitHub-Event", "push"),
                ("X-GitHub-Delivery", "forged-1"),
                ("X-Hub-Signature-256", &forged),
                ("Content-Type", "application/json"),
            ],
            body,
        )
    });
    assert_eq!(code, 401, "a forged signature is refused");
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(
        config_map_level("cluster-hangzhou", namespace)
            .await
            .as_deref(),
        Some("info"),
        "a forged webhook changes nothing"
    );

    let signature = github_signature(b"webhook-secret", body);
    let (code, answer) = tokio::task::block_in_place(|| {
        agent.request(
            "POST",
            "/hooks/github",
            &[
                ("X-GitHub-Event", "push"),
                ("X-GitHub-Delivery", "delivery-1"),
                ("X-Hub-Signature-256", &signature),
                ("Content-Type", "application/json"),
            ],
            body,
        )
    });
    assert_eq!(code, 202, "{answer}");
    let mut reflected = false;
    for _ in 0..150 {
        let mut all = true;
        for cluster in ["cluster-hangzhou", "cluster-frankfurt"] {
            all &= config_map_level(cluster, namespace).await.as_deref() == Some("debug");
        }
        if all {
            reflected = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(reflected, "every member cluster reflects the pushed commit");

    let (code, status) = tokio::task::block_in_place(|| agent.request("GET", "/status", &[], b""));
    assert_eq!(code, 200);
    let status: Value = serde_json::from_str(&status).expect("status JSON");
    assert_eq!(status["commit"], Value::String(second.clone()), "{status}");
    assert_eq!(
        status["clusters"]["cluster-frankfurt"]["status"], "synced",
        "{status}"
    );
    let (_, metrics) = tokio::task::block_in_place(|| agent.request("GET", "/metrics", &[], b""));
    assert!(
        metrics.contains(
            r#"flotilla_webhook_requests_total{provider="github",result="unauthorized"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"flotilla_webhook_requests_total{provider="github",result="accepted"} 1"#),
        "{metrics}"
    );
    assert!(!metrics.contains(&second), "no commit hash in metrics");

    // GitLab (token header, de-duplicated by its body) and the generic receiver (bearer).
    let gitlab = |token: &str, uuid: &str| {
        tokio::task::block_in_place(|| {
            agent.request(
                "POST",
                "/hooks/gitlab",
                &[
                    ("X-Gitlab-Token", token),
                    ("X-Gitlab-Event", "Push Hook"),
                    ("X-Gitlab-Event-UUID", uuid),
                ],
                br#"{"ref":"refs/heads/main"}"#,
            )
        })
    };
    assert_eq!(gitlab("wrong", "u-1").0, 401);
    assert_eq!(gitlab("gitlab-token", "u-2").0, 202);
    assert_eq!(
        gitlab("gitlab-token", "u-2").0,
        200,
        "a duplicate delivery is ignored"
    );
    let generic = |headers: &[(&str, &str)]| {
        tokio::task::block_in_place(|| agent.request("POST", "/hooks/generic", headers, b"{}")).0
    };
    assert_eq!(generic(&[]), 401);
    assert_eq!(generic(&[("Authorization", "Bearer generic-token")]), 202);
    let (_, metrics) = tokio::task::block_in_place(|| agent.request("GET", "/metrics", &[], b""));
    for series in [
        r#"flotilla_webhook_requests_total{provider="gitlab",result="unauthorized"} 1"#,
        r#"flotilla_webhook_requests_total{provider="gitlab",result="accepted"} 1"#,
        r#"flotilla_webhook_requests_total{provider="gitlab",result="duplicate"} 1"#,
        r#"flotilla_webhook_requests_total{provider="generic",result="unauthorized"} 1"#,
        r#"flotilla_webhook_requests_total{provider="generic",result="accepted"} 1"#,
    ] {
        assert!(metrics.contains(series), "{series}\n{metrics}");
    }

    // A commit that does not render applies nothing; the last good state stays.
    std::fs::write(
        work.join("broken.yaml"),
        "kind: ConfigMap\nmetadata: [unclosed\n",
    )
    .expect("write");
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "broken"]);
    let remote = dir.path().join("remote.git");
    git(
        &work,
        &["push", "-q", remote.to_str().expect("utf-8"), "HEAD:main"],
    );
    let broken = git(&work, &["rev-parse", "HEAD"]);
    // A new push is a new body (GitHub's names the commit); the same body again would be a
    // replayed delivery, which the agent ignores.
    let push = format!(r#"{{"ref":"refs/heads/main","after":"{broken}"}}"#);
    let signature = github_signature(b"webhook-secret", push.as_bytes());
    let (code, _) = tokio::task::block_in_place(|| {
        agent.request(
            "POST",
            "/hooks/github",
            &[
                ("X-GitHub-Event", "push"),
                ("X-GitHub-Delivery", "delivery-broken"),
                ("X-Hub-Signature-256", &signature),
            ],
            push.as_bytes(),
        )
    });
    assert_eq!(code, 202);
    let mut error = String::new();
    for _ in 0..100 {
        let (_, status) = tokio::task::block_in_place(|| agent.request("GET", "/status", &[], b""));
        let status: Value = serde_json::from_str(&status).expect("status JSON");
        if let Some(text) = status["error"].as_str() {
            error = text.to_string();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(
        error.contains(&broken) && error.contains("broken.yaml"),
        "{error}"
    );
    assert!(error.contains("nothing applied"), "{error}");
    for cluster in ["cluster-hangzhou", "cluster-frankfurt"] {
        assert_eq!(
            config_map_level(cluster, namespace).await.as_deref(),
            Some("debug"),
            "the last good commit stays in {cluster}"
        );
    }
    let (_, metrics) = tokio::task::block_in_place(|| agent.request("GET", "/metrics", &[], b""));
    assert!(
        metrics.contains(r#"flotilla_plan_failures_total{stage="render"} 1"#),
        "{metrics}"
    );
    let (ready, _) = tokio::task::block_in_place(|| agent.request("GET", "/readyz", &[], b""));
    assert_eq!(ready, 200, "still serving the last good commit");
}

async fn deployment_json(cluster: &str, namespace: &str, name: &str) -> Option<Value> {
    let client = clusters().client(cluster).await;
    let api: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
        client,
        namespace,
        &kube::api::ApiResource::erase::<k8s_openapi::api::apps::v1::Deployment>(&()),
    );
    api.get_opt(name)
        .await
        .expect("GET deployment")
        .map(|d| serde_json::to_value(d).expect("json"))
}

/// Polls until `check` holds, for up to 20 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!("not within 20 s: {what}");
}

/// `flotilla sync --once` of a fleet directory on the shared clusters: (exit code, stdout,
/// stderr).
fn sync_once(dir: &Path, sync: &str) -> (i32, String, String) {
    let kubeconfig = clusters().kubeconfig.to_string_lossy().into_owned();
    let path = dir.to_string_lossy().into_owned();
    flotilla(&[
        "sync",
        "--once",
        &path,
        "--kubeconfig",
        &kubeconfig,
        "--name",
        sync,
    ])
}

/// The agent on a `--path` fleet (no polling), ready, with its watches listed.
async fn path_agent(dir: &Path, sync: &str) -> Agent {
    let kubeconfig = clusters().kubeconfig.to_string_lossy().into_owned();
    let agent = Agent::start(&[
        "--path",
        dir.to_str().expect("utf-8"),
        "--kubeconfig",
        &kubeconfig,
        "--interval",
        "1h",
        "--name",
        sync,
    ]);
    tokio::task::block_in_place(|| agent.wait_ready());
    // Give the watches a moment to list what they manage.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    agent
}

/// A Fleet named `sync` of one cluster, placing everything there.
fn one_cluster_fleet(sync: &str, cluster: &str) -> String {
    format!(
        r#"apiVersion: fleet.kurator.dev/v1alpha1
kind: Fleet
metadata: {{name: {sync}, namespace: flotilla-system}}
spec:
  clusters:
    - {{name: {cluster}, kind: AttachedCluster}}
  placement: {{}}
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_corrects_drift_and_only_reports_it_when_the_object_asks() {
    let clusters = clusters();
    let _shared = clusters.shared().await;
    let namespace = "e2e-drift";
    let cluster = "cluster-shanghai";
    let deployment = |name: &str, annotations: &str| {
        web_deployment(namespace, name, 2, "nginx:1.27.3", annotations)
    };
    let fleet = format!(
        r#"{}{}{}---
apiVersion: v1
kind: ConfigMap
metadata: {{name: settings, namespace: {namespace}}}
data: {{level: info}}
"#,
        one_cluster_fleet("drift", cluster),
        deployment("web", ""),
        deployment("reported", "flotilla.dev/drift: report"),
    );
    let dir = write_fleet(&[("fleet.yaml", &fleet)]);
    let agent = path_agent(dir.path(), "drift").await;

    let client = clusters.client(cluster).await;
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(client.clone(), namespace);
    // `kubectl scale` and `kubectl set image`, as other field managers.
    let params = kube::api::PatchParams {
        field_manager: Some("kubectl-scale".into()),
        ..Default::default()
    };
    deployments
        .patch(
            "web",
            &params,
            &kube::api::Patch::Merge(serde_json::json!({"spec": {"replicas": 5}})),
        )
        .await
        .expect("scale");
    let params = kube::api::PatchParams {
        field_manager: Some("kubectl-set".into()),
        ..Default::default()
    };
    let image = serde_json::json!({"spec": {"template": {"spec": {"containers": [
        {"name": "web", "image": "nginx:1.0-edited"}]}}}});
    deployments
        .patch("web", &params, &kube::api::Patch::Strategic(image.clone()))
        .await
        .expect("set image");
    deployments
        .patch("reported", &params, &kube::api::Patch::Strategic(image))
        .await
        .expect("set image on the reported one");
    let config_maps: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client, namespace);
    config_maps
        .delete("settings", &Default::default())
        .await
        .expect("delete configmap");

    eventually(
        "the scaled Deployment is scaled back and its image restored",
        || async {
            deployment_json(cluster, namespace, "web")
                .await
                .is_some_and(|d| {
                    d["spec"]["replicas"] == 2
                        && d["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.27.3"
                })
        },
    )
    .await;
    eventually("the deleted ConfigMap is back", || async {
        config_map_exists(cluster, namespace, "settings").await
    })
    .await;

    // Report mode: left alone, reported with field path and manager.
    let reported = deployment_json(cluster, namespace, "reported")
        .await
        .expect("deployment");
    assert_eq!(
        reported["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.0-edited"
    );
    let (_, status) = tokio::task::block_in_place(|| agent.request("GET", "/status", &[], b""));
    let status: Value = serde_json::from_str(&status).expect("status JSON");
    let drift = status["clusters"][cluster]["drift"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let reported_drift = drift
        .iter()
        .find(|d| d["object"]["name"] == "reported")
        .unwrap_or_else(|| panic!("no drift of `reported` in {status}"));
    assert_eq!(reported_drift["corrected"], false, "{reported_drift}");
    assert_eq!(
        reported_drift["fields"],
        serde_json::json!(["spec.template.spec.containers[name=web].image"]),
        "{reported_drift}"
    );
    assert_eq!(
        reported_drift["managers"],
        serde_json::json!(["kubectl-set"]),
        "{reported_drift}"
    );
    let web_drift: Vec<&Value> = drift
        .iter()
        .filter(|d| d["object"]["name"] == "web")
        .collect();
    assert!(web_drift.iter().all(|d| d["corrected"] == true), "{status}");
    assert!(
        web_drift
            .iter()
            .any(|d| d["managers"] == serde_json::json!(["kubectl-scale"])),
        "{status}"
    );
    let (_, metrics) = tokio::task::block_in_place(|| agent.request("GET", "/metrics", &[], b""));
    let detected = metric_value(
        &metrics,
        &format!("flotilla_drift_detected_total{{cluster=\"{cluster}\"}}"),
    );
    let corrected = metric_value(
        &metrics,
        &format!("flotilla_drift_corrected_total{{cluster=\"{cluster}\"}}"),
    );
    assert!(detected >= 3.0, "{metrics}");
    assert!(corrected >= 2.0 && corrected < detected, "{metrics}");

    // `--path`: an edit of the directory is synced without a poll or webhook.
    std::fs::write(
        dir.path().join("fleet.yaml"),
        fleet.replace("level: info", "level: debug"),
    )
    .expect("edit fleet");
    eventually("the edited directory is synced", || async {
        let client = clusters.client(cluster).await;
        let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
            kube::Api::namespaced(client, namespace);
        api.get_opt("settings")
            .await
            .ok()
            .flatten()
            .and_then(|cm| cm.data?.get("level").cloned())
            .as_deref()
            == Some("debug")
    })
    .await;
}

/// The row of `cluster` in a `flotilla status` table, split into its columns.
fn status_row<'a>(table: &'a str, cluster: &str) -> Vec<&'a str> {
    table
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|columns| columns.first() == Some(&cluster))
        .unwrap_or_else(|| panic!("no row for {cluster}:\n{table}"))
}

/// `flotilla status` against a real agent (not a canned answer): what the agent serializes is
/// what the command reads. Every cluster synced at the pushed commit exits 0; a commit with a
/// CRD every apiserver refuses leaves both clusters degraded, which exits 1 and names the
/// object.
#[tokio::test(flavor = "multi_thread")]
async fn flotilla_status_reads_a_running_agent_and_exits_1_on_a_refused_object() {
    let clusters = clusters();
    let _shared = clusters.shared().await;
    let namespace = "e2e-status";
    let members = ["cluster-hangzhou", "cluster-frankfurt"];
    let dir = tempfile::tempdir().expect("tempdir");
    let (remote, work) = harness::git_remote_and_work(dir.path());
    // Commits `files` to the fleet repo; its commit id.
    let commit = |files: &[(&str, &str)], message: &str| {
        for (path, content) in files {
            std::fs::write(work.join(path), content).expect("write");
        }
        git(&work, &["add", "."]);
        git(&work, &["commit", "-q", "-m", message]);
        let remote = remote.to_str().expect("utf-8");
        git(&work, &["push", "-q", remote, "HEAD:main"]);
        git(&work, &["rev-parse", "HEAD"])
    };
    let fleet = format!(
        r#"apiVersion: fleet.kurator.dev/v1alpha1
kind: Fleet
metadata: {{name: status, namespace: flotilla-system}}
spec:
  clusters: [{{name: {}, kind: AttachedCluster}}, {{name: {}, kind: AttachedCluster}}]
  placement: {{}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: settings, namespace: {namespace}}}
data: {{level: info}}
"#,
        members[0], members[1]
    );
    let first = commit(&[("fleet.yaml", &fleet)], "a ConfigMap");
    let token_file = dir.path().join("generic-token");
    std::fs::write(&token_file, "generic-token").expect("write token");
    let kubeconfig = clusters.kubeconfig.to_string_lossy().into_owned();
    let cache = dir.path().join("cache");
    let agent = Agent::start(&[
        "--repo",
        &format!("file://{}", remote.display()),
        "--kubeconfig",
        &kubeconfig,
        // Only the webhook below fetches the second commit.
        "--interval",
        "1h",
        "--generic-token-file",
        token_file.to_str().expect("utf-8"),
        "--cache-dir",
        cache.to_str().expect("utf-8"),
        "--name",
        "status",
    ]);
    tokio::task::block_in_place(|| agent.wait_ready());
    let server = format!("http://127.0.0.1:{}", agent.port);
    // `flotilla status`: its exit code and table, once each member's row says Ready, synced
    // here, `state` at `commit` (the table's 12 characters of it) with `failed` objects.
    let status_command = |state: &str, commit: &str, failed: &str| {
        let (code, table, stderr) =
            tokio::task::block_in_place(|| flotilla(&["status", "--server", &server]));
        for cluster in members {
            let row = status_row(&table, cluster);
            assert_eq!(
                row[1..5],
                ["Ready", "yes", state, &commit[..12]],
                "{table}\n{stderr}"
            );
            assert_eq!(row[6], failed, "failed objects: {table}");
        }
        (code, table)
    };

    let (code, table) = status_command("synced", &first, "0");
    assert_eq!(code, 0, "{table}");
    assert!(
        table.starts_with(&format!("commit:  {}\nready:   yes\n", &first[..12])),
        "{table}"
    );
    let rows = table
        .lines()
        .filter(|line| line.starts_with("cluster-"))
        .count();
    assert_eq!(rows, members.len(), "only the fleet's clusters: {table}");

    // A CRD every apiserver refuses (a default of the wrong type): both clusters degraded.
    let second = commit(&[("crd.yaml", REFUSED_CRD)], "a refused CRD");
    let (code, answer) = tokio::task::block_in_place(|| {
        agent.request(
            "POST",
            "/hooks/generic",
            &[("Authorization", "Bearer generic-token")],
            b"",
        )
    });
    assert_eq!(code, 202, "{answer}");
    eventually("the second commit is synced on both clusters", || async {
        let status = tokio::task::block_in_place(|| agent.status());
        members.iter().all(|cluster| {
            let view = &status["clusters"][cluster];
            view["commit"] == second.as_str() && view["status"] != "synced"
        })
    })
    .await;
    let (code, table) = status_command("degraded", &second, "1");
    assert_eq!(code, 1, "{table}");
    for cluster in members {
        let refused = "CustomResourceDefinition.apiextensions.k8s.io/jobs.batch.example.dev";
        assert!(
            table
                .lines()
                .any(|line| line.split_whitespace().take(2).eq([cluster, refused])),
            "{table}"
        );
    }
    assert!(table.contains("\nFailed objects:\n"), "{table}");
}

fn metric_value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_prometheus_scrapes_the_agents_metrics() {
    let clusters = clusters();
    let _shared = clusters.shared().await;
    let dir = write_fleet(&[(
        "fleet.yaml",
        r#"apiVersion: fleet.kurator.dev/v1alpha1
kind: Fleet
metadata: {name: scrape, namespace: flotilla-system}
spec:
  clusters:
    - {name: ondemand-cluster, kind: AttachedCluster}
  placement: {}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: scraped, namespace: e2e-prometheus}
data: {a: "1"}
"#,
    )]);
    let kubeconfig = clusters.kubeconfig.to_string_lossy().into_owned();
    let agent = Agent::start(&[
        "--path",
        dir.path().to_str().expect("utf-8"),
        "--kubeconfig",
        &kubeconfig,
        "--name",
        "scrape",
    ]);
    tokio::task::block_in_place(|| agent.wait_ready());

    // Debian's prometheus, scraping the agent every second.
    let prometheus_port = free_port();
    // Outside the fleet directory, which the agent watches.
    let prometheus_dir = tempfile::tempdir().expect("tempdir");
    let config = prometheus_dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: flotilla\n    static_configs: [{{targets: ['127.0.0.1:{}']}}]\n",
            agent.port
        ),
    )
    .expect("prometheus config");
    let mut prometheus = std::process::Command::new("setpriv")
        .args(["--pdeathsig", "KILL", "--", "prometheus"])
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            prometheus_dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prometheus_port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("prometheus (Debian package `prometheus`)");
    let query = |q: &str| {
        let path = format!("/api/v1/query?query={q}");
        tokio::task::block_in_place(|| {
            std::net::TcpStream::connect(("127.0.0.1", prometheus_port))
                .ok()
                .map(|_| http_request(prometheus_port, "GET", &path, &[], b""))
        })
    };
    let mut answer = None;
    for _ in 0..150 {
        if let Some((200, body)) = query("flotilla_syncs_total") {
            let json: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            if json["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
            {
                answer = Some(json);
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    let answer = answer.expect("prometheus scraped flotilla_syncs_total within 30 s");
    let series = &answer["data"]["result"][0];
    assert_eq!(series["metric"]["job"], "flotilla", "{answer}");
    assert_eq!(series["metric"]["cluster"], "ondemand-cluster", "{answer}");
    assert_eq!(series["metric"]["result"], "synced", "{answer}");
    let value: f64 = series["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(value >= 1.0, "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_deploy_manifests_are_accepted_by_a_real_apiserver() {
    use flotilla::apply::{apply_one, member::connect_all};
    let clusters = clusters();
    let _shared = clusters.shared().await;
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let rendered = render_tree(&deploy, Path::new(".")).expect("deploy/ renders");
    let kinds: BTreeSet<&str> = rendered.objects.iter().map(|o| o.kind()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "ConfigMap",
            "Deployment",
            "Namespace",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
        ])
    );
    // The hub here is one of the member apiservers; its flotilla-system namespace exists once
    // anything synced there, and a dry-run cannot create it for the objects inside.
    let hub = "cluster-frankfurt";
    {
        let client = clusters.client(hub).await;
        let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client);
        let namespace = serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
                                           "metadata": {"name": "flotilla-system"}});
        namespaces
            .patch(
                "flotilla-system",
                &kube::api::PatchParams::apply("e2e-deploy"),
                &kube::api::Patch::Apply(namespace),
            )
            .await
            .expect("flotilla-system namespace");
    }
    let members = connect_all(&clusters.kubeconfig, &[hub.to_string()])
        .await
        .expect("kubeconfig");
    let member = members[0].1.as_ref().expect("hub client");
    for object in &rendered.objects {
        let prepared = member
            .prepare(object, "deploy-dry-run")
            .await
            .expect("discovery");
        let accepted = apply_one(member, &prepared, true)
            .await
            .unwrap_or_else(|failure| {
                panic!("{}: refused: {}", object.object_ref(), failure.error)
            });
        if object.kind() == "Deployment" {
            let container = &accepted.live["spec"]["template"]["spec"]["containers"][0];
            assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
            assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
            assert_eq!(
                accepted.live["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"],
                true
            );
        }
    }
    // A dry-run wrote nothing.
    let client = clusters.client(hub).await;
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(client, "flotilla-system");
    assert!(
        deployments
            .get_opt("flotilla")
            .await
            .expect("GET")
            .is_none()
    );
}

/// Runs the clusters' own kubectl (the lane's version) against one cluster; panics on failure.
fn kubectl(cluster: &str, args: &[&str], editor: Option<&str>, stdin: Option<&str>) {
    let clusters = clusters();
    let mut command = std::process::Command::new(clusters.kubectl());
    command
        .arg("--kubeconfig")
        .arg(&clusters.kubeconfig)
        .args(["--context", cluster])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(editor) = editor {
        command.env("KUBE_EDITOR", editor);
    }
    let mut child = command.spawn().expect("kubectl");
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("kubectl stdin");
    }
    let output = child.wait_with_output().expect("kubectl");
    assert!(
        output.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Each way a person changes a Deployment with kubectl is drift the agent corrects, on every
/// lane: on 1.20, `kubectl scale` (the scale subresource) leaves managedFields as they were, so
/// only the live value of `spec.replicas` shows it.
#[tokio::test(flavor = "multi_thread")]
async fn every_kubectl_change_to_a_managed_deployment_is_corrected() {
    let clusters = clusters();
    let _shared = clusters.shared().await;
    let namespace = "e2e-kubectl";
    let cluster = "cluster-frankfurt";
    let deployment = |name: &str, replicas: u32, image: &str| {
        web_deployment(namespace, name, replicas, image, "")
    };
    let fleet = format!(
        "{}{}{}",
        one_cluster_fleet("kubectl", cluster),
        deployment("scaled", 3, "nginx:1.27.3"),
        deployment("edited", 3, "nginx:1.27.3"),
    );
    let dir = write_fleet(&[("fleet.yaml", &fleet)]);
    let agent = path_agent(dir.path(), "kubectl").await;

    let field = |name: &str, pointer: &str| {
        let (name, pointer) = (name.to_string(), pointer.to_string());
        async move {
            deployment_json(cluster, namespace, &name)
                .await
                .and_then(|d| d.pointer(&pointer).cloned())
        }
    };
    let replicas = "/spec/replicas";
    let image = "/spec/template/spec/containers/0/image";
    /// One change made with kubectl: what it is, the Deployment, the field it changes, the
    /// command, `KUBE_EDITOR`, and stdin.
    struct Change<'a>(
        &'a str,
        &'a str,
        &'a str,
        Vec<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
    );
    let scaled_ssa = deployment("scaled", 8, "nginx:1.27.3");
    let edited_csa = deployment("edited", 5, "nginx:1.27.3");
    let changes = [
        Change(
            "kubectl scale",
            "scaled",
            replicas,
            vec![
                "-n",
                namespace,
                "scale",
                "deployment/scaled",
                "--replicas=9",
            ],
            None,
            None,
        ),
        Change(
            "kubectl patch",
            "scaled",
            replicas,
            vec![
                "-n",
                namespace,
                "patch",
                "deployment",
                "scaled",
                "--type=merge",
                "-p",
                r#"{"spec":{"replicas":7}}"#,
            ],
            None,
            None,
        ),
        Change(
            "another manager's server-side apply",
            "scaled",
            replicas,
            vec![
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager=intruder",
                "-f",
                "-",
            ],
            None,
            Some(&scaled_ssa),
        ),
        Change(
            "kubectl set image",
            "edited",
            image,
            vec![
                "-n",
                namespace,
                "set",
                "image",
                "deployment/edited",
                "web=nginx:evil",
            ],
            None,
            None,
        ),
        Change(
            "kubectl edit",
            "edited",
            image,
            vec!["-n", namespace, "edit", "deployment", "edited"],
            Some("sed -i s|nginx:1.27.3|nginx:edited|"),
            None,
        ),
        Change(
            "a client-side kubectl apply",
            "edited",
            replicas,
            vec!["apply", "-f", "-"],
            None,
            Some(&edited_csa),
        ),
    ];
    for Change(what, name, pointer, args, editor, stdin) in changes {
        let planned = field(name, pointer).await.expect("the planned value");
        tokio::task::block_in_place(|| kubectl(cluster, &args, editor, stdin));
        eventually(&format!("{what} on {name} corrected"), || async {
            field(name, pointer).await.as_ref() == Some(&planned)
        })
        .await;
    }
    let status = tokio::task::block_in_place(|| agent.status());
    let drift = status["clusters"][cluster]["drift"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        drift.len() >= 6 && drift.iter().all(|d| d["corrected"] == true),
        "{status}"
    );
}

/// The minor version of the cluster's Kubernetes 1.x (`"20+"` as some distributions say).
async fn kubernetes_minor(cluster: &str) -> u32 {
    let client = clusters().client(cluster).await;
    let version = client.apiserver_version().await.expect("/version");
    assert_eq!(version.major, "1", "{version:?}");
    version.minor.trim_end_matches('+').parse().expect("minor")
}

/// A Deployment whose Git manifest has no `replicas` reaches the cluster without them, so
/// whatever scales it there owns the field: the seed's `autoscaling/v2` HorizontalPodAutoscaler
/// on the current lane (it scales to its minimum), `kubectl scale` on 1.20 (which has no
/// autoscaling/v2). Neither is drift, and a later sync does not undo it.
#[tokio::test(flavor = "multi_thread")]
async fn replicas_git_leaves_out_belong_to_the_hpa_and_are_never_drift() {
    let clusters = clusters();
    let _shared = clusters.shared().await;
    let namespace = "e2e-hpa";
    let cluster = "cluster-hangzhou";
    // autoscaling/v2 is served from 1.23.
    let with_hpa = kubernetes_minor(cluster).await >= 23;
    let deployment = web_deployment(namespace, "autoscaled", 0, "nginx:1.27.3", "")
        .replace("  replicas: 0\n", "");
    let hpa = format!(
        r#"---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {{name: autoscaled, namespace: {namespace}}}
spec:
  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: autoscaled}}
  minReplicas: 3
  maxReplicas: 6
  metrics:
    - type: Resource
      resource: {{name: cpu, target: {{type: Utilization, averageUtilization: 80}}}}
"#
    );
    let fleet = format!(
        "{}{deployment}{}",
        one_cluster_fleet("hpa", cluster),
        if with_hpa { hpa.as_str() } else { "" }
    );
    let dir = write_fleet(&[("fleet.yaml", &fleet)]);
    let agent = path_agent(dir.path(), "hpa").await;
    let replicas = || async {
        deployment_json(cluster, namespace, "autoscaled")
            .await
            .and_then(|d| d["spec"]["replicas"].as_i64())
    };
    if with_hpa {
        eventually(
            "the HPA scales the Deployment to its minimum, 3",
            || async { replicas().await == Some(3) },
        )
        .await;
    } else {
        tokio::task::block_in_place(|| {
            kubectl(
                cluster,
                &[
                    "-n",
                    namespace,
                    "scale",
                    "deployment/autoscaled",
                    "--replicas=3",
                ],
                None,
                None,
            )
        });
    }
    // A later sync of a changed commit leaves the replicas where the HPA put them.
    std::fs::write(
        dir.path().join("fleet.yaml"),
        format!(
            "{fleet}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: later, namespace: {namespace}}}\n"
        ),
    )
    .expect("edit fleet");
    eventually("the later commit is synced", || async {
        let client = clusters.client(cluster).await;
        let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
            kube::Api::namespaced(client, namespace);
        api.get_opt("later").await.ok().flatten().is_some()
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(replicas().await, Some(3));
    let live = deployment_json(cluster, namespace, "autoscaled")
        .await
        .expect("the Deployment");
    let flotilla_owns_replicas = live["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|entry| entry["manager"] == "flotilla")
        .any(|entry| entry.pointer("/fieldsV1/f:spec/f:replicas").is_some());
    assert!(!flotilla_owns_replicas, "{live}");
    let status = tokio::task::block_in_place(|| agent.status());
    let drift = status["clusters"][cluster]["drift"].to_string();
    assert!(!drift.contains("autoscaled"), "{status}");
    assert_eq!(status["clusters"][cluster]["status"], "synced", "{status}");
}

/// CRDs with CEL validations, in the style of Istio's and Rook's (tests/fixtures/cel-crds):
/// a current apiserver takes them as written and enforces their rules, so only the object
/// that breaks one fails, with the rule's message; 1.20, which has no CEL, refuses each CRD
/// alone and the rest of the sync still applies.
#[tokio::test(flavor = "multi_thread")]
async fn crds_with_cel_rules_apply_and_the_apiserver_enforces_them() {
    let clusters = clusters();
    let _shared = clusters.shared().await;
    let cluster = "cluster-shanghai";
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cel-crds");
    let read = |name: &str| std::fs::read_to_string(fixtures.join(name)).expect("fixture");
    let fleet = write_fleet(&[
        ("fleet.yaml", &one_cluster_fleet("cel", cluster)),
        ("crds.yaml", &read("crds.yaml")),
        ("resources.yaml", &read("resources.yaml")),
    ]);
    let (code, stdout, stderr) = sync_once(fleet.path(), "cel");
    assert_eq!(code, 1, "one object breaks a rule\n{stdout}\n{stderr}");
    assert!(
        config_map_exists(cluster, "e2e-cel", "plain").await,
        "{stdout}"
    );
    let failures: Vec<&str> = stdout
        .lines()
        .filter(|line| line.starts_with(&format!("{cluster}: ")))
        .collect();
    // CEL rules are on by default from 1.25.
    if kubernetes_minor(cluster).await >= 25 {
        assert_eq!(failures.len(), 1, "{stdout}");
        assert!(
            failures[0].contains("VirtualService.networking.example.io e2e-cel/no-timeout")
                && failures[0].contains("must be a valid duration greater than 1ms"),
            "{stdout}"
        );
        let client = clusters.client(cluster).await;
        for (api_version, kind, plural) in [
            (
                "networking.example.io/v1",
                "DestinationRule",
                "destinationrules",
            ),
            (
                "networking.example.io/v1",
                "VirtualService",
                "virtualservices",
            ),
            ("ceph.example.io/v1", "CephBlockPool", "cephblockpools"),
        ] {
            let (group, version) = api_version.split_once('/').expect("group/version");
            let resource = kube::api::ApiResource {
                group: group.into(),
                version: version.into(),
                api_version: api_version.into(),
                kind: kind.into(),
                plural: plural.into(),
            };
            let api: kube::Api<kube::api::DynamicObject> =
                kube::Api::namespaced_with(client.clone(), "e2e-cel", &resource);
            let name = if kind == "CephBlockPool" {
                "replicapool"
            } else {
                "reviews"
            };
            assert!(
                api.get_opt(name).await.expect("GET").is_some(),
                "{kind} {name}\n{stdout}"
            );
        }
    } else {
        // 1.20's server-side apply refuses `x-kubernetes-validations` where its schema types
        // the field, each CRD alone; nested in `items` it is not typed, and the apiserver
        // drops the rules silently, so the broken VirtualService is accepted there.
        for crd in [
            "destinationrules.networking.example.io",
            "cephblockpools.ceph.example.io",
        ] {
            assert!(
                failures
                    .iter()
                    .any(|line| line.contains(crd) && line.contains("x-kubernetes-validations")),
                "{crd}\n{stdout}"
            );
        }
        assert!(
            !stdout.contains("no-timeout"),
            "1.20 cannot enforce the rule\n{stdout}"
        );
    }
}

/// Test Nodes no kubelet runs (tainted, so nothing is scheduled there), deleted on drop.
struct CapacityNodes(Vec<(&'static str, String)>);

impl CapacityNodes {
    async fn add(&mut self, cluster: &'static str, name: &str, cpu: &str) {
        let client = clusters().client(cluster).await;
        let api: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client);
        let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"flotilla.test/capacity": "yes"}},
            "spec": {"taints": [{"key": "flotilla.test/capacity", "value": "only", "effect": "NoSchedule"}]},
        }))
        .expect("node");
        api.create(&kube::api::PostParams::default(), &node)
            .await
            .expect("create node");
        let status = serde_json::json!({"status": {
            // cpu is what limits: memory and pods are plenty.
            "capacity": {"cpu": cpu, "memory": "4Ti", "pods": "5000"},
            "allocatable": {"cpu": cpu, "memory": "4Ti", "pods": "5000"},
        }});
        api.patch_status(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&status),
        )
        .await
        .expect("node status");
        self.0.push((cluster, name.to_string()));
    }

    async fn remove(&mut self, cluster: &'static str, name: &str) {
        let client = clusters().client(cluster).await;
        let api: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client);
        api.delete(name, &kube::api::DeleteParams::default())
            .await
            .expect("delete node");
        self.0.retain(|(c, n)| !(*c == cluster && n == name));
    }
}

impl Drop for CapacityNodes {
    fn drop(&mut self) {
        for (cluster, name) in &self.0 {
            kubectl(
                cluster,
                &["delete", "node", name, "--ignore-not-found"],
                None,
                None,
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_divides_by_live_capacity_and_follows_a_node_pool() {
    let clusters = clusters();
    let _shared = clusters.shared().await;
    let namespace = "live-capacity";
    let mut nodes = CapacityNodes(Vec::new());
    // Both clusters get room (the 1.20 lane has no other Nodes).
    nodes
        .add("cluster-hangzhou", "capacity-base-hz", "16")
        .await;
    nodes
        .add("cluster-shanghai", "capacity-base-sh", "16")
        .await;
    let fleet = |replicas: u32| {
        format!(
            r#"apiVersion: fleet.kurator.dev/v1alpha1
kind: Fleet
metadata: {{name: live-capacity, namespace: flotilla-system}}
spec:
  clusters:
    - {{name: cluster-hangzhou, kind: AttachedCluster}}
    - {{name: cluster-shanghai, kind: AttachedCluster}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {namespace}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
        - name: web
          image: nginx:1.27.3
          resources: {{requests: {{cpu: 100m, memory: 64Mi}}}}
---
apiVersion: policy.karmada.io/v1alpha1
kind: PropagationPolicy
metadata: {{name: web, namespace: {namespace}}}
spec:
  resourceSelectors: [{{apiVersion: apps/v1, kind: Deployment, name: web}}]
  placement:
    replicaScheduling:
      replicaSchedulingType: Divided
      replicaDivisionPreference: Weighted
      weightPreference: {{dynamicWeight: AvailableReplicas}}
"#
        )
    };
    let dir = write_fleet(&[("fleet.yaml", fleet(10).as_str())]);
    let _agent = path_agent(dir.path(), "live-capacity").await;
    let shares = || async {
        (
            deployment_replicas("cluster-hangzhou", namespace, "web").await,
            deployment_replicas("cluster-shanghai", namespace, "web").await,
        )
    };
    // Waits up to a minute for the agent to see the change (from its watches) and re-divide.
    async fn within_a_minute<F, Fut>(what: &str, mut check: F) -> (i64, i64)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = (Option<i64>, Option<i64>)>,
    {
        let mut last = (None, None);
        for _ in 0..120 {
            last = check().await;
            // A cluster given no replicas holds no Deployment: 0.
            let (hangzhou, shanghai) = (last.0.unwrap_or(0), last.1.unwrap_or(0));
            if what_holds(what, hangzhou, shanghai) {
                return (hangzhou, shanghai);
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        panic!("not within a minute: {what}; last {last:?}");
    }
    fn what_holds(what: &str, hangzhou: i64, shanghai: i64) -> bool {
        let total = hangzhou + shanghai;
        match what {
            "divided" => total == 10 && hangzhou > 0 && shanghai > 0,
            "shanghai grew" => total == 10 && shanghai >= 9,
            "shanghai shrank" => total == 10 && shanghai <= 7 && hangzhou >= 3,
            "scaled to 14" => total == 14,
            "scaled to 4" => total == 4,
            _ => false,
        }
    }
    within_a_minute("divided", shares).await;
    // A big node pool in shanghai: its available replicas dwarf hangzhou's.
    nodes
        .add("cluster-shanghai", "capacity-pool-sh", "1000")
        .await;
    within_a_minute("shanghai grew", shares).await;
    // The pool goes away: the division follows back.
    nodes.remove("cluster-shanghai", "capacity-pool-sh").await;
    let before = within_a_minute("shanghai shrank", shares).await;
    // Karmada's steady division: scaling up keeps every replica where it is and places only
    // the new ones; scaling down shrinks the previous shares, moving nothing either.
    std::fs::write(dir.path().join("fleet.yaml"), fleet(14)).expect("write fleet");
    let up = within_a_minute("scaled to 14", shares).await;
    assert!(
        up.0 >= before.0 && up.1 >= before.1,
        "scaling up moved replicas: {before:?} -> {up:?}"
    );
    std::fs::write(dir.path().join("fleet.yaml"), fleet(4)).expect("write fleet");
    let down = within_a_minute("scaled to 4", shares).await;
    assert!(
        down.0 <= up.0 && down.1 <= up.1,
        "scaling down moved replicas: {up:?} -> {down:?}"
    );
}
