//! Placement and override rules on plain YAML, one rule per test.

use std::path::Path;

use super::*;
use crate::render::load::parse_objects;

const FLEET: &str = r#"
apiVersion: fleet.kurator.dev/v1alpha1
kind: Fleet
metadata: {name: fleet, namespace: flotilla-system}
spec:
  clusters:
    - {name: member1, labels: {env: prod}, provider: aws, region: eu-west-1, zones: [eu-west-1a]}
    - {name: member2, labels: {env: prod}, provider: gcp, region: us-east1, zones: [us-east1-b]}
    - name: member3
      labels: {env: dev}
      provider: alibaba
      region: cn-east-1
      taints: [{key: spot, value: "true", effect: NoSchedule}]
"#;

fn plan_of(yaml: &str) -> Plan {
    try_plan(yaml).unwrap_or_else(|e| panic!("{e}"))
}

fn try_plan(yaml: &str) -> Result<Plan, PlanError> {
    let objects = parse_objects(&format!("{FLEET}\n---\n{yaml}"), Path::new("fleet.yaml")).unwrap();
    plan(&Rendered { objects })
}

fn deployment(name: &str, namespace: &str, replicas: u64) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {namespace}, labels: {{app: {name}}}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers: [{{name: {name}, image: "registry.example.com/team/{name}:1.0", args: ["--base"]}}]
"#
    )
}

fn targets(plan: &Plan, name: &str) -> Vec<(String, Option<u64>)> {
    plan.resources
        .iter()
        .find(|r| r.resource.name == name)
        .map(|r| {
            r.targets
                .iter()
                .map(|t| (t.cluster.clone(), t.replicas))
                .collect()
        })
        .unwrap_or_default()
}

fn desired<'a>(plan: &'a Plan, cluster: &str, kind: &str, name: &str) -> Option<&'a Object> {
    plan.desired[cluster]
        .iter()
        .find(|o| o.kind() == kind && o.name() == name)
}

#[test]
fn divided_replicas_follow_static_weights() {
    let plan = plan_of(&format!(
        "{}---\n{}",
        deployment("nginx", "web", 10),
        r#"
apiVersion: policy.karmada.io/v1alpha1
kind: PropagationPolicy
metadata: {name: nginx, namespace: web}
spec:
  resourceSelectors: [{apiVersion: apps/v1, kind: Deployment, name: nginx}]
  placement:
    clusterAffinity: {clusterNames: [member1, member2]}
    replicaScheduling:
      replicaSchedulingType: Divided
      replicaDivisionPreference: Weighted
      weightPreference:
        staticWeightList:
          - {targetCluster: {clusterNames: [member1]}, weight: 60}
          - {targetCluster: {clusterNames: [member2]}, weight: 40}
"#
    ));
    assert_eq!(
        targets(&plan, "nginx"),
        [("member1".into(), Some(6)), ("member2".into(), Some(4))]
    );
    let copy = desired(&plan, "member1", "Deployment", "nginx").unwrap();
    assert_eq!(copy.value["spec"]["replicas"], 6);
    assert!(plan.errors.is_empty(), "{:?}", plan.errors);
}

#[test]
fn duplicated_is_the_default_and_keeps_replicas() {
    let plan = plan_of(&format!(
        "{}---\n{}",
        deployment("web", "web", 3),
        r#"
apiVersion: policy.karmada.io/v1alpha1
kind: PropagationPolicy
metadata: {name: web, namespace: web}
spec:
  resourceSelectors: [{apiVersion: apps/v1, kind: Deployment}]
  placement:
    clusterTolerations: [{key: spot, operator: Exists}]
"#
    ));
    assert_eq!(
        targets(&plan, "web"),
        [
            ("member1".into(), Some(3)),
            ("member2".into(), Some(3)),
            ("member3".into(), Some(3))
        ]
    );
}

#[test]
fn untolerated_taint_excludes_a_cluster() {
    let plan = plan_of(&format!(
        "{}---\n{}",
        deployment("web", "web", 3),
        r#"
apiVersion: policy.karmada.io/v1alpha1
kind: PropagationPolicy
metadata: {name: web, namespace: web}
spec:
  resourceSelectors: [{apiVersion: apps/v1, kind: Deployment}]
"#
    ));
    let clusters: Vec<String> = targets(&plan, "web").into_iter().map(|t| t.0).collect();
    assert_eq!(clusters, ["member1", "member2"]);
}

#[test]
fn unweighted_division_is_equal_and_zero_shares_get_nothing() {
    let plan = plan_of(&format!(
        "{}---\n{}---\n{}",
        deployment("one", "web", 1),
        deployment("skewed", "web", 2),
        r#"
apiVersion: policy.karmada.io/v1alpha1
kind: PropagationPolicy
metadata: {name: equal, namespace: web}
spec:
  resourceSelectors: [{apiVersion: apps/v1, kind: Deployment, name: one}]
  placement:
    clusterAffinity: {labelSelector: {matchLabels: {env: prod}}}
    replicaScheduling: {replicaSchedulingType: Divided}
---
apiVersion: policy.karmada.io/v1alpha1
kind: PropagationPolicy
metadata: {name: skewed, namespace: web}
spec:
  resourceSelectors: [{apiVersion: apps/v1, kind: Deployment, name: skewed}]
  placement:
    clusterAffinity: {labelSelector: {matchLabels: {env: prod}}}
    replicaScheduling:
      replicaSchedulingType: Divided
      weightPreference:
        staticWeightList:
          - {targetCluster: {clusterNames: [member1]}, weight: 100}
          - {targetCluster: {clusterNames: [member2]}, weight: 1}
"#
    ));
    assert_eq!(targets(&plan, "one"), [("member1".into(), Some(1))]);
    assert_eq!(targets(&plan, "skewed"), [("member1".into(), Some(2))]);
    assert!(desired(&plan, "member2", "Deployment", "skewed").is_none());
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.kind == "zero_share" && w.message.contains("member2")),
        "{:?}",
        plan.warnings
    );
}

#[test]
fn static_weights_without_any_match_mean_equal_weights() {
    let plan = plan_of(&format!(
        "{}---\n{}",
        deployment("web", "web", 4),
        r#"
apiVersion: policy.karmada.io/v1alpha1
kind: PropagationPolicy
metadata: {name: web, namespace: web}
spec:
  resourceSelectors: [{apiVersion: apps/v1, kind: Deployment}]
  placement:
    clusterAffinity: {clusterNames: [member1, member2]}
    replicaScheduling:
      replicaSchedulingType: Divided
      weightPreference:
        staticWeightList: [{targetCluster: {clusterNames: [elsewhere]}, weight: 5}]
"#
    ));
    assert_eq!(
        targets(&plan, "web"),
        [("member1".into(), Some(2)), ("member2".into(), Some(2))]
    );
}

#[test]
fn policy_choice_prefers_namespaced_then_priority_then_specificity_then_name() {
    let policy = |kind: &str,
                  name: &str,
                  ns: &str,
                  priority: i32,
                  selector: &str,
                  cluster: &str| {
        let namespace = if ns.is_empty() {
            String::new()
        } else {
            format!(", namespace: {ns}")
        };
        format!(
            "apiVersion: policy.karmada.io/v1alpha1\nkind: {kind}\nmetadata: {{name: {name}{namespace}}}\nspec:\n  priority: {priority}\n  resourceSelectors: [{{apiVersion: apps/v1, kind: Deployment{selector}}}]\n  placement: {{clusterAffinity: {{clusterNames: [{cluster}]}}}}\n---\n"
        )
    };
    let winner = |policies: &str| {
        let plan = plan_of(&format!("{policies}{}", deployment("app", "web", 1)));
        plan.resources[0].policy.clone().unwrap()
    };
    // Namespaced beats cluster-wide even at lower priority.
    assert_eq!(
        winner(
            &(policy(
                "ClusterPropagationPolicy",
                "cluster-wide",
                "",
                100,
                ", name: app",
                "member1"
            ) + &policy("PropagationPolicy", "namespaced", "web", 0, "", "member2"))
        ),
        "PropagationPolicy web/namespaced"
    );
    // Higher explicit priority beats a more specific selector.
    assert_eq!(
        winner(
            &(policy(
                "PropagationPolicy",
                "specific",
                "web",
                0,
                ", name: app",
                "member1"
            ) + &policy("PropagationPolicy", "urgent", "web", 5, "", "member2"))
        ),
        "PropagationPolicy web/urgent"
    );
    // Same priority: name > labelSelector > match-all.
    assert_eq!(
        winner(
            &(policy("PropagationPolicy", "all", "web", 0, "", "member1")
                + &policy(
                    "PropagationPolicy",
                    "labels",
                    "web",
                    0,
                    ", labelSelector: {matchLabels: {app: app}}",
                    "member1"
                )
                + &policy(
                    "PropagationPolicy",
                    "zname",
                    "web",
                    0,
                    ", name: app",
                    "member2"
                ))
        ),
        "PropagationPolicy web/zname"
    );
    // All equal: the lower name wins.
    assert_eq!(
        winner(
            &(policy("PropagationPolicy", "beta", "web", 0, "", "member1")
                + &policy("PropagationPolicy", "alpha", "web", 0, "", "member2"))
        ),
        "PropagationPolicy web/alpha"
    );
    // A PropagationPolicy never selects another namespace's resources.
    let plan = plan_of(
        &(policy("PropagationPolicy", "other", "elsewhere", 0, "", "member1")
            + &deployment("app", "web", 1)),
    );
    assert!(plan.resources.is_empty());
    assert!(
        plan.warnings.iter().any(|w| w.kind == "unselected"),
        "{:?}",
        plan.warnings
    );
}

/// Policies written as Karmada's own samples write them (`samples/nginx`): no namespaces on
/// the policies or the Deployment, static weights 1:1, and label and annotation overriders
/// with `add`, `remove` and `replace` (the last two on keys the template does not have).
const KARMADA_STYLE_SAMPLE: &str = r#"
apiVersion: policy.karmada.io/v1alpha1
kind: PropagationPolicy
metadata:
  name: podinfo-propagation
spec:
  resourceSelectors:
    - apiVersion: apps/v1
      kind: Deployment
      name: podinfo
  placement:
    clusterAffinity:
      clusterNames:
        - member1
        - member2
    replicaScheduling:
      replicaDivisionPreference: Weighted
      replicaSchedulingType: Divided
      weightPreference:
        staticWeightList:
          - targetCluster:
              clusterNames:
                - member1
            weight: 1
          - targetCluster:
              clusterNames:
                - member2
            weight: 1
---
apiVersion: policy.karmada.io/v1alpha1
kind: OverridePolicy
metadata:
  name: podinfo-op
spec:
  resourceSelectors:
    - apiVersion: apps/v1
      kind: Deployment
      name: podinfo
  overrideRules:
    - targetCluster:
        clusterNames:
          - member2
      overriders:
        labelsOverrider:
          - operator: add
            value:
              stage: canary
          - operator: add
            value:
              team: frontend
          - operator: remove
            value:
              absent: absent
          - operator: replace
            value:
              also-absent: value
    - targetCluster:
        clusterNames:
          - member1
      overriders:
        annotationsOverrider:
          - operator: add
            value:
              stage: stable
          - operator: remove
            value:
              absent: absent
          - operator: replace
            value:
              also-absent: value
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: podinfo
  labels:
    app: podinfo
spec:
  replicas: 2
  selector:
    matchLabels:
      app: podinfo
  template:
    metadata:
      labels:
        app: podinfo
    spec:
      containers:
      - image: ghcr.io/stefanprodan/podinfo
        name: podinfo
"#;

#[test]
fn karmada_style_sample_policies_apply_as_written() {
    let plan = plan_of(KARMADA_STYLE_SAMPLE);
    assert_eq!(
        targets(&plan, "podinfo"),
        [("member1".into(), Some(1)), ("member2".into(), Some(1))]
    );
    let m2 = desired(&plan, "member2", "Deployment", "podinfo").unwrap();
    assert_eq!(m2.value["metadata"]["labels"]["stage"], "canary");
    assert_eq!(m2.value["metadata"]["labels"]["team"], "frontend");
    // `replace` of a key that is not there adds nothing, as Karmada's overrider does.
    assert!(m2.value["metadata"]["labels"].get("also-absent").is_none());
    assert!(m2.value["metadata"].get("annotations").is_none());
    let m1 = desired(&plan, "member1", "Deployment", "podinfo").unwrap();
    assert_eq!(m1.value["metadata"]["annotations"]["stage"], "stable");
    assert!(
        m1.value["metadata"]["annotations"]
            .get("also-absent")
            .is_none()
    );
    assert!(m1.value["metadata"]["labels"].get("stage").is_none());
}

#[test]
fn overrides_run_cluster_wide_first_then_by_specificity_and_name() {
    let plan = plan_of(&format!(
        "{}---\n{}",
        deployment("app", "web", 1),
        r#"
apiVersion: policy.karmada.io/v1alpha1
kind: PropagationPolicy
metadata: {name: app, namespace: web}
spec:
  resourceSelectors: [{apiVersion: apps/v1, kind: Deployment}]
  placement: {clusterAffinity: {clusterNames: [member1, member2]}}
---
apiVersion: policy.karmada.io/v1alpha1
kind: OverridePolicy
metadata: {name: a-by-name, namespace: web}
spec:
  resourceSelectors: [{apiVersion: apps/v1, kind: Deployment, name: app}]
  overrideRules:
    - overriders: {labelsOverrider: [{operator: add, value: {winner: by-name}}]}
---
apiVersion: policy.karmada.io/v1alpha1
kind: OverridePolicy
metadata: {name: z-match-all, namespace: web}
spec:
  resourceSelectors: [{apiVersion: apps/v1, kind: Deployment}]
  overrideRules:
    - overriders: {labelsOverrider: [{operator: add, value: {winner: match-all}}]}
---
apiVersion: policy.karmada.io/v1alpha1
kind: ClusterOverridePolicy
metadata: {name: cluster-wide}
spec:
  resourceSelectors: [{apiVersion: apps/v1, kind: Deployment, name: app}]
  overrideRules:
    - targetCluster: {clusterNames: [member2]}
      overriders:
        labelsOverrider: [{operator: add, value: {winner: cluster-wide, only-member2: "yes"}}]
        imageOverrider: [{component: Registry, operator: replace, value: mirror.example.cn}]
        argsOverrider: [{containerName: app, operator: add, value: ["--region=us"]}]
"#
    ));
    for cluster in ["member1", "member2"] {
        let copy = desired(&plan, cluster, "Deployment", "app").unwrap();
        assert_eq!(
            copy.value["metadata"]["labels"]["winner"], "by-name",
            "{cluster}"
        );
    }
    let m2 = desired(&plan, "member2", "Deployment", "app").unwrap();
    let container = &m2.value["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "mirror.example.cn/team/app:1.0");
    assert_eq!(
        container["args"],
        serde_json::json!(["--base", "--region=us"])
    );
    assert_eq!(m2.value["metadata"]["labels"]["only-member2"], "yes");
    let m1 = desired(&plan, "member1", "Deployment", "app").unwrap();
    assert_eq!(
        m1.value["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example.com/team/app:1.0"
    );
}

#[test]
fn failing_override_fails_that_cluster_only() {
    let plan = plan_of(&format!(
        "{}---\n{}",
        deployment("app", "web", 1),
        r#"
apiVersion: policy.karmada.io/v1alpha1
kind: PropagationPolicy
metadata: {name: app, namespace: web}
spec:
  resourceSelectors: [{apiVersion: apps/v1, kind: Deployment}]
  placement: {clusterAffinity: {clusterNames: [member1, member2]}}
---
apiVersion: policy.karmada.io/v1alpha1
kind: OverridePolicy
metadata: {name: broken, namespace: web}
spec:
  resourceSelectors: [{apiVersion: apps/v1, kind: Deployment}]
  overrideRules:
    - targetCluster: {clusterNames: [member2]}
      overriders:
        plaintext: [{path: /spec/nothing/here, operator: replace, value: 1}]
"#
    ));
    assert!(desired(&plan, "member1", "Deployment", "app").is_some());
    assert!(desired(&plan, "member2", "Deployment", "app").is_none());
    let error = plan.errors[0].to_string();
    assert!(
        error.contains("cluster member2")
            && error.contains("OverridePolicy web/broken")
            && error.contains("overrideRules[0]")
            && error.contains("/spec/nothing/here"),
        "{error}"
    );
}

#[test]
fn unknown_policy_field_names_file_and_field() {
    let error = try_plan(
        r#"
apiVersion: policy.karmada.io/v1alpha1
kind: PropagationPolicy
metadata: {name: typo, namespace: web}
spec:
  resourceSelectors: [{apiVersion: apps/v1, kind: Deployment}]
  placement:
    clusterAffinity: {clusterName: [member1]}
"#,
    )
    .unwrap_err();
    assert_eq!(error.kind(), "invalid_field");
    assert!(!error.is_retryable(), "the same repo fails the same way");
    let error = error.to_string();
    assert!(error.starts_with("fleet.yaml:"), "{error}");
    assert!(error.contains("document 2"), "{error}");
    assert!(
        error.contains("spec.placement.clusterAffinity.clusterName"),
        "{error}"
    );
    // Fields Karmada has but that do nothing offline are accepted.
    try_plan(
        r#"
apiVersion: policy.karmada.io/v1alpha1
kind: PropagationPolicy
metadata: {name: full, namespace: web}
spec:
  resourceSelectors: [{apiVersion: apps/v1, kind: Deployment}]
  conflictResolution: Overwrite
  failover: {application: {decisionConditions: {tolerationSeconds: 60}}}
  preserveResourcesOnDeletion: true
"#,
    )
    .unwrap();
}

#[test]
fn spread_constraint_with_too_few_groups_fails_the_resource_only() {
    let plan = plan_of(&format!(
        "{}---\n{}---\n{}",
        deployment("wide", "web", 1),
        deployment("fine", "web", 1),
        r#"
apiVersion: policy.karmada.io/v1alpha1
kind: PropagationPolicy
metadata: {name: wide, namespace: web}
spec:
  resourceSelectors: [{apiVersion: apps/v1, kind: Deployment, name: wide}]
  placement:
    spreadConstraints: [{spreadByField: region, minGroups: 3, maxGroups: 3}]
---
apiVersion: policy.karmada.io/v1alpha1
kind: PropagationPolicy
metadata: {name: fine, namespace: web}
spec:
  resourceSelectors: [{apiVersion: apps/v1, kind: Deployment, name: fine}]
  placement:
    spreadConstraints: [{spreadByField: cluster, maxGroups: 1, minGroups: 1}]
"#
    ));
    assert_eq!(plan.errors.len(), 1);
    assert!(
        plan.errors[0].problem.contains("minGroups is 3"),
        "{}",
        plan.errors[0]
    );
    assert_eq!(targets(&plan, "fine"), [("member1".into(), Some(1))]);
}

#[test]
fn namespaces_are_created_where_objects_land() {
    let plan = plan_of(&format!(
        "{}---\n{}",
        deployment("app", "shop", 1),
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: plain}
data: {a: b}
---
apiVersion: policy.karmada.io/v1alpha1
kind: ClusterPropagationPolicy
metadata: {name: all}
spec:
  resourceSelectors:
    - {apiVersion: apps/v1, kind: Deployment}
    - {apiVersion: v1, kind: ConfigMap}
  placement: {clusterAffinity: {clusterNames: [member1]}}
"#
    ));
    let names: Vec<(String, String)> = plan.desired["member1"]
        .iter()
        .map(|o| (o.kind().to_string(), o.name().to_string()))
        .collect();
    // The Namespace comes first; `default` is never created.
    assert_eq!(names[0], ("Namespace".to_string(), "shop".to_string()));
    assert!(
        !names
            .iter()
            .any(|(k, n)| k == "Namespace" && n == "default")
    );
    assert!(plan.desired["member2"].is_empty());
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.kind == "empty_cluster" && w.message.contains("member2"))
    );
}

#[test]
fn propagate_deps_carries_referenced_config_along() {
    let plan = plan_of(&format!(
        "{}---\n{}",
        deployment("app", "web", 2).replace(
            "args: [\"--base\"]",
            "args: [\"--base\"], envFrom: [{configMapRef: {name: app-config}}]"
        ),
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: app-config, namespace: web}
data: {a: b}
---
apiVersion: policy.karmada.io/v1alpha1
kind: PropagationPolicy
metadata: {name: app, namespace: web}
spec:
  propagateDeps: true
  resourceSelectors: [{apiVersion: apps/v1, kind: Deployment}]
  placement: {clusterAffinity: {clusterNames: [member2]}}
"#
    ));
    assert_eq!(targets(&plan, "app-config"), [("member2".into(), None)]);
    assert!(desired(&plan, "member2", "ConfigMap", "app-config").is_some());
    assert!(
        !plan.warnings.iter().any(|w| w.kind == "unselected"),
        "{:?}",
        plan.warnings
    );
}

#[test]
fn fleet_placement_is_the_default_and_foreign_fields_warn() {
    let objects = parse_objects(
        &format!(
            "{}\n  placement:\n    clusterAffinity: {{clusterNames: [member2]}}\n    policy: ordered\n---\n{}",
            FLEET.trim_end(),
            deployment("loose", "web", 2)
        ),
        Path::new("fleet.yaml"),
    )
    .unwrap();
    let plan = plan(&Rendered { objects }).unwrap();
    assert_eq!(targets(&plan, "loose"), [("member2".into(), Some(2))]);
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.kind == "fleet_placement_field"
                && w.message.contains("spec.placement.policy")),
        "{:?}",
        plan.warnings
    );
}

#[test]
fn attached_cluster_labels_merge_into_the_fleet_entry() {
    let plan = plan_of(
        r#"
apiVersion: cluster.kurator.dev/v1alpha1
kind: AttachedCluster
metadata: {name: member1, labels: {gpu: a100}}
spec:
  kubeconfig: {secretRef: {name: member1-kubeconfig, key: value}}
"#,
    );
    let member1 = &plan.clusters[0];
    assert_eq!(member1.labels.get("gpu").map(String::as_str), Some("a100"));
    assert_eq!(member1.labels.get("env").map(String::as_str), Some("prod"));
    assert_eq!(
        member1.kubeconfig_secret.as_ref().unwrap().name,
        "member1-kubeconfig"
    );
}

#[test]
fn capacity_based_division_is_refused_offline() {
    let plan = plan_of(&format!(
        "{}---\n{}",
        deployment("app", "web", 4),
        r#"
apiVersion: policy.karmada.io/v1alpha1
kind: PropagationPolicy
metadata: {name: app, namespace: web}
spec:
  resourceSelectors: [{apiVersion: apps/v1, kind: Deployment}]
  placement:
    replicaScheduling: {replicaSchedulingType: Divided, replicaDivisionPreference: Aggregated}
"#
    ));
    assert!(
        plan.errors[0].problem.contains("Aggregated"),
        "{}",
        plan.errors[0]
    );
}

#[test]
fn diff_shows_replicas_that_move() {
    let policy = |weights: (u64, u64)| {
        format!(
            r#"
apiVersion: policy.karmada.io/v1alpha1
kind: PropagationPolicy
metadata: {{name: nginx, namespace: web}}
spec:
  resourceSelectors: [{{apiVersion: apps/v1, kind: Deployment}}]
  placement:
    clusterAffinity: {{clusterNames: [member1, member2]}}
    replicaScheduling:
      replicaSchedulingType: Divided
      weightPreference:
        staticWeightList:
          - {{targetCluster: {{clusterNames: [member1]}}, weight: {}}}
          - {{targetCluster: {{clusterNames: [member2]}}, weight: {}}}
"#,
            weights.0, weights.1
        )
    };
    let before = plan_of(&format!(
        "{}---\n{}",
        deployment("nginx", "web", 10),
        policy((60, 40))
    ));
    let after = plan_of(&format!(
        "{}---\n{}",
        deployment("nginx", "web", 10),
        policy((50, 50))
    ));
    let changes = diff(&before, &after);
    type Move = (String, Option<Option<u64>>, Option<Option<u64>>);
    let moves: Vec<Move> = changes
        .iter()
        .map(|c| (c.cluster.clone(), c.before, c.after))
        .collect();
    assert_eq!(
        moves,
        [
            ("member1".to_string(), Some(Some(6)), Some(Some(5))),
            ("member2".to_string(), Some(Some(4)), Some(Some(5)))
        ]
    );
    assert!(diff(&after, &after).is_empty());
}

#[test]
fn plan_names_the_affinity_group_that_won() {
    let plan = plan_of(&format!(
        "{}---\n{}",
        deployment("app", "web", 2),
        r#"
apiVersion: policy.karmada.io/v1alpha1
kind: PropagationPolicy
metadata: {name: app, namespace: web}
spec:
  resourceSelectors: [{apiVersion: apps/v1, kind: Deployment}]
  placement:
    clusterAffinities:
      - {affinityName: gone, clusterNames: [retired]}
      - {affinityName: fallback, clusterNames: [member2]}
"#
    ));
    assert_eq!(
        plan.resources[0].affinity_group.as_deref(),
        Some("fallback")
    );
    assert_eq!(targets(&plan, "app"), [("member2".into(), Some(2))]);
}

#[test]
fn failover_moves_divided_replicas_and_leaves_duplicated_alone() {
    let yaml = format!(
        "{}---\n{}---\n{}---\n{}",
        deployment("nginx", "web", 10),
        deployment("cache", "web", 2),
        r#"
apiVersion: policy.karmada.io/v1alpha1
kind: PropagationPolicy
metadata: {name: nginx, namespace: web}
spec:
  resourceSelectors: [{apiVersion: apps/v1, kind: Deployment, name: nginx}]
  placement:
    clusterAffinity: {clusterNames: [member1, member2, member3]}
    clusterTolerations: [{key: spot, operator: Exists}]
    replicaScheduling:
      replicaSchedulingType: Divided
      weightPreference:
        staticWeightList:
          - {targetCluster: {clusterNames: [member1]}, weight: 60}
          - {targetCluster: {clusterNames: [member2]}, weight: 30}
          - {targetCluster: {clusterNames: [member3]}, weight: 10}
"#,
        r#"
apiVersion: policy.karmada.io/v1alpha1
kind: PropagationPolicy
metadata: {name: cache, namespace: web}
spec:
  resourceSelectors: [{apiVersion: apps/v1, kind: Deployment, name: cache}]
  placement:
    clusterAffinity: {clusterNames: [member1, member2]}
"#
    );
    let objects = parse_objects(&format!("{FLEET}\n---\n{yaml}"), Path::new("fleet.yaml")).unwrap();
    let rendered = Rendered { objects };
    let unavailable = BTreeSet::from(["member1".to_string()]);
    let plan = plan_with_unavailable(&rendered, &unavailable).unwrap();

    // All 10 replicas are divided 30:10 over the others: 7/3 by Webster (ties go to the
    // cluster with fewer replicas).
    // member1 keeps its planned share: it cannot be reached, and serves again when back.
    assert_eq!(
        targets(&plan, "nginx"),
        [
            ("member1".into(), Some(6)),
            ("member2".into(), Some(7)),
            ("member3".into(), Some(3))
        ]
    );
    let nginx = plan
        .resources
        .iter()
        .find(|r| r.resource.name == "nginx")
        .unwrap();
    let failover = nginx.failover.as_ref().expect("a failover is recorded");
    assert_eq!(failover.unavailable, ["member1"]);
    assert_eq!(
        failover.planned,
        [
            Target {
                cluster: "member1".into(),
                replicas: Some(6)
            },
            Target {
                cluster: "member2".into(),
                replicas: Some(3)
            },
            Target {
                cluster: "member3".into(),
                replicas: Some(1)
            }
        ]
    );
    assert_eq!(
        desired(&plan, "member2", "Deployment", "nginx")
            .unwrap()
            .value["spec"]["replicas"],
        7
    );
    // Duplicated: unchanged, and no failover recorded.
    assert_eq!(
        targets(&plan, "cache"),
        [("member1".into(), Some(2)), ("member2".into(), Some(2))]
    );
    assert!(
        plan.resources
            .iter()
            .find(|r| r.resource.name == "cache")
            .unwrap()
            .failover
            .is_none()
    );

    // All available again: the planned division, and no failover.
    let restored = plan_with_unavailable(&rendered, &BTreeSet::new()).unwrap();
    assert_eq!(
        targets(&restored, "nginx"),
        [
            ("member1".into(), Some(6)),
            ("member2".into(), Some(3)),
            ("member3".into(), Some(1))
        ]
    );
    assert!(restored.resources.iter().all(|r| r.failover.is_none()));
}

#[test]
fn a_template_without_replicas_stays_without_when_duplicated_and_counts_one_when_divided() {
    let without_replicas = deployment("app", "web", 1).replace("  replicas: 1\n", "");
    let policy = |scheduling: &str| {
        format!(
            "apiVersion: policy.karmada.io/v1alpha1\nkind: PropagationPolicy\nmetadata: {{name: app, namespace: web}}\nspec:\n  resourceSelectors: [{{apiVersion: apps/v1, kind: Deployment}}]\n  placement:\n    clusterAffinity: {{clusterNames: [member1, member2]}}\n{scheduling}---\n"
        )
    };
    // Duplicated: an HPA in each member owns spec.replicas, so Flotilla never sets it.
    let plan = plan_of(&format!("{}{without_replicas}", policy("")));
    assert_eq!(
        targets(&plan, "app"),
        [("member1".into(), None), ("member2".into(), None)]
    );
    let copy = desired(&plan, "member1", "Deployment", "app").unwrap();
    assert!(
        copy.value["spec"].get("replicas").is_none(),
        "{}",
        copy.value
    );
    // Divided: Karmada divides what its apiserver defaulted the template to, 1.
    let plan = plan_of(&format!(
        "{}{without_replicas}",
        policy("    replicaScheduling: {replicaSchedulingType: Divided}\n")
    ));
    assert_eq!(targets(&plan, "app"), [("member1".into(), Some(1))]);
}

/// A PropagationPolicy `web/web` for the Deployment `web`, with `rest` after its selectors.
fn web_policy(rest: &str) -> String {
    format!(
        "\napiVersion: policy.karmada.io/v1alpha1\nkind: PropagationPolicy\nmetadata: {{name: web, namespace: web}}\nspec:\n  resourceSelectors: [{{apiVersion: apps/v1, kind: Deployment, name: web}}]\n{rest}"
    )
}

#[test]
fn mistyped_enum_values_are_refused_with_file_document_field_and_allowed_values() {
    let policy =
        web_policy("  placement:\n    replicaScheduling: {replicaSchedulingType: divided}\n");
    let error = try_plan(&format!("{}---{policy}", deployment("web", "web", 4)))
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("fleet.yaml:28: document 3: ")
            && error.contains("PropagationPolicy web: spec.placement.replicaScheduling.replicaSchedulingType: \"divided\" is not one of Duplicated, Divided"),
        "{error}"
    );
}

#[test]
fn todays_karmada_fields_are_accepted_and_unapplied_ones_are_reported() {
    let policy = web_policy(
        r#"  propagateDeps: true
  schedulePriority: {priorityClassSource: KubePriorityClass, priorityClassName: high}
  preemption: Never
  conflictResolution: Overwrite
  failover:
    application:
      decisionConditions: {tolerationSeconds: 120}
      purgeMode: Gracefully
      gracePeriodSeconds: 600
    cluster: {purgeMode: Directly}
  placement:
    workloadAffinity:
      affinity: {groupByLabelKey: app.example.com/group}
      antiAffinity: {groupByLabelKey: app.example.com/spread}
    clusterAffinities:
      - affinityName: primary
        clusterNames: [aws-1]
        overflowAffinities:
          - affinityName: burst
            clusterNames: [aws-2]
    replicaScheduling: {replicaSchedulingType: Divided, replicaDivisionPreference: Weighted}
"#,
    );
    let plan = plan_of(&format!("{}---{policy}", deployment("web", "web", 4)));
    let unapplied: Vec<&str> = plan
        .warnings
        .iter()
        .filter(|w| w.kind == "field_not_applied")
        .map(|w| w.message.as_str())
        .collect();
    assert_eq!(unapplied.len(), 2, "{unapplied:?}");
    for field in ["overflowAffinities", "spec.schedulePriority"] {
        assert!(
            unapplied.iter().any(|m| m.contains(field)),
            "{field}: {unapplied:?}"
        );
    }
    let error = try_plan(&format!(
        "{}---{}",
        deployment("web", "web", 4),
        policy.replace("purgeMode: Directly", "purgeMode: Never")
    ))
    .unwrap_err()
    .to_string();
    assert!(
        error.contains(
            "spec.failover.cluster.purgeMode: \"Never\" is not one of Directly, Gracefully"
        ),
        "{error}"
    );
}

#[test]
fn replica_counts_kubernetes_would_refuse_fail_the_resource() {
    for (replicas, shown) in [
        ("-5", "-5"),
        ("ten", "\"ten\""),
        ("4294967296", "4294967296"),
    ] {
        let yaml =
            deployment("web", "web", 4).replace("replicas: 4", &format!("replicas: {replicas}"));
        let plan = plan_of(&format!(
            "{yaml}---{}",
            web_policy("  placement:\n    replicaScheduling: {replicaSchedulingType: Divided}\n")
        ));
        assert_eq!(plan.errors.len(), 1, "{replicas}: {:?}", plan.errors);
        assert!(
            plan.errors[0]
                .problem
                .contains(&format!("spec.replicas: {shown} is not a replica count")),
            "{}",
            plan.errors[0].problem
        );
        assert_eq!(plan.errors[0].kind(), "invalid_replicas");
    }
}

#[test]
fn a_spec_that_is_not_a_mapping_fails_the_resource() {
    // Shown with the placement fuzz target: dividing the replicas of such a template panicked.
    for spec in ["x", "[1, 2]", "3"] {
        let yaml = format!(
            "\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: web}}\nspec: {spec}\n"
        );
        let plan = plan_of(&format!(
            "{yaml}---{}",
            web_policy("  placement:\n    replicaScheduling: {replicaSchedulingType: Divided}\n")
        ));
        assert_eq!(plan.errors.len(), 1, "{spec}: {:?}", plan.errors);
        assert!(
            plan.errors[0].problem.contains("spec: not a mapping"),
            "{}",
            plan.errors[0].problem
        );
    }
}

#[test]
fn overrides_may_not_change_which_object_it_is() {
    for (operation, shown) in [
        (
            "{path: /metadata/name, operator: remove}",
            "an object without a name",
        ),
        (
            "{path: /kind, operator: replace, value: ClusterRoleBinding}",
            "ClusterRoleBinding.apps web/web",
        ),
    ] {
        let override_policy = format!(
            "\napiVersion: policy.karmada.io/v1alpha1\nkind: ClusterOverridePolicy\nmetadata: {{name: strip}}\nspec:\n  resourceSelectors: [{{apiVersion: apps/v1, kind: Deployment}}]\n  overrideRules:\n    - overriders:\n        plaintext: [{operation}]\n"
        );
        let plan = plan_of(&format!(
            "{}---{}---{override_policy}",
            deployment("web", "web", 4),
            web_policy(
                "  placement:\n    replicaScheduling: {replicaSchedulingType: Duplicated}\n"
            )
        ));
        assert!(!plan.errors.is_empty(), "{operation}");
        assert!(
            plan.errors.iter().all(|e| e
                .problem
                .contains("may not change the object's apiVersion, kind, name or namespace")
                && e.problem.contains(shown)),
            "{:?}",
            plan.errors
        );
        assert!(plan.desired.values().all(|objects| {
            objects
                .iter()
                .all(|o| o.kind() != "ClusterRoleBinding" && !o.name().is_empty())
        }));
    }
}

#[test]
fn workload_affinity_groups_keep_workloads_together_or_apart() {
    // Two Deployments of each group, each policy on one cluster (a cluster spread of one), so
    // the group decides which.
    let app = |name: &str, group: &str| {
        deployment(name, "web", 2).replace(
            &format!("labels: {{app: {name}}}}}\n"),
            &format!("labels: {{app: {name}, together: {group}, apart: {group}}}}}\n"),
        )
    };
    let policy = |term: &str| {
        format!(
            "\napiVersion: policy.karmada.io/v1alpha1\nkind: PropagationPolicy\nmetadata: {{name: p, namespace: web}}\nspec:\n  resourceSelectors: [{{apiVersion: apps/v1, kind: Deployment}}]\n  placement:\n    clusterAffinity: {{clusterNames: [member1, member2]}}\n    spreadConstraints: [{{spreadByField: cluster, minGroups: 1, maxGroups: 1}}]\n    workloadAffinity: {{{term}: {{groupByLabelKey: {key}}}}}\n",
            key = if term == "affinity" {
                "together"
            } else {
                "apart"
            }
        )
    };
    let cluster_of = |plan: &Plan, name: &str| {
        let targets = targets(plan, name);
        assert_eq!(targets.len(), 1, "{name}: {targets:?} {:?}", plan.errors);
        targets[0].0.clone()
    };
    let apart = plan_of(&format!(
        "{}---{}---{}",
        app("first", "g1"),
        app("second", "g1"),
        policy("antiAffinity")
    ));
    assert_ne!(cluster_of(&apart, "first"), cluster_of(&apart, "second"));
    let together = plan_of(&format!(
        "{}---{}---{}",
        app("first", "g1"),
        app("second", "g1"),
        policy("affinity")
    ));
    assert_eq!(
        cluster_of(&together, "first"),
        cluster_of(&together, "second")
    );
    // A third workload of the anti-affinity group has no cluster left.
    let crowded = plan_of(&format!(
        "{}---{}---{}---{}",
        app("first", "g1"),
        app("second", "g1"),
        app("third", "g1"),
        policy("antiAffinity")
    ));
    assert_eq!(crowded.errors.len(), 1, "{:?}", crowded.errors);
    assert_eq!(crowded.errors[0].resource.name, "third");
}

#[test]
fn names_no_apiserver_accepts_fail_their_resource_only() {
    let long = "a".repeat(254);
    let (v1, config_map) = ("v1", "ConfigMap");
    for (name, namespace, field, api_version, kind) in [
        ("a/b", "web", "metadata.name", v1, config_map),
        ("..", "web", "metadata.name", v1, config_map),
        (long.as_str(), "web", "metadata.name", v1, config_map),
        ("ok", "Web_Space", "metadata.namespace", v1, config_map),
        ("ok", "web", "kind", v1, "Config/Map"),
        ("ok", "web", "kind", v1, ".."),
        ("ok", "web", "apiVersion", "../v1", config_map),
        ("ok", "web", "apiVersion", "example.com/v1/x", config_map),
        ("ok", "web", "apiVersion", "Example.com/v1", config_map),
    ] {
        let bad = format!(
            "\napiVersion: {api_version:?}\nkind: {kind:?}\nmetadata: {{name: {name:?}, namespace: {namespace:?}}}\n"
        );
        let plan = plan_of(&format!("{}---{bad}", deployment("web", "web", 2)));
        assert_eq!(plan.errors.len(), 1, "{name}: {:?}", plan.errors);
        assert!(
            plan.errors[0].problem.starts_with(field),
            "{}",
            plan.errors[0].problem
        );
        assert_eq!(plan.errors[0].resource.name, name, "only the bad one fails");
        assert_eq!(plan.errors[0].kind(), "invalid_name", "{name}");
    }
}

#[test]
fn overrides_may_not_leave_a_replica_count_the_apiserver_refuses() {
    for value in ["-5", "ten", "2147483648"] {
        let override_policy = format!(
            "\napiVersion: policy.karmada.io/v1alpha1\nkind: ClusterOverridePolicy\nmetadata: {{name: scale}}\nspec:\n  resourceSelectors: [{{apiVersion: apps/v1, kind: Deployment}}]\n  overrideRules:\n    - overriders:\n        plaintext: [{{path: /spec/replicas, operator: replace, value: {value}}}]\n"
        );
        let plan = plan_of(&format!(
            "{}---{}---{override_policy}",
            deployment("web", "web", 4),
            web_policy("  placement:\n    replicaScheduling: {replicaSchedulingType: Divided}\n")
        ));
        assert!(!plan.errors.is_empty(), "{value}");
        assert!(
            plan.errors
                .iter()
                .all(|e| e.problem.contains("overrideRules[0]")
                    && e.problem.contains("spec.replicas")),
            "{:?}",
            plan.errors
        );
        assert!(
            plan.errors.iter().all(|e| e.kind() == "invalid_replicas"),
            "{:?}",
            plan.errors
        );
        assert!(
            plan.desired
                .values()
                .all(|objects| objects.iter().all(|o| o.kind() != "Deployment")),
            "{value}: no cluster gets the Deployment"
        );
    }
}

#[test]
fn data_keys_no_apiserver_accepts_fail_their_resource_only() {
    for (kind, field, key) in [
        ("ConfigMap", "data", "../x"),
        ("ConfigMap", "binaryData", "a b"),
        ("Secret", "stringData", "."),
        ("Secret", "data", "sub/key"),
    ] {
        let bad = format!(
            "\napiVersion: v1\nkind: {kind}\nmetadata: {{name: bad, namespace: web}}\n{field}: {{{key:?}: \"eA==\"}}\n"
        );
        let plan = plan_of(&format!("{}---{bad}", deployment("web", "web", 2)));
        assert_eq!(plan.errors.len(), 1, "{key}: {:?}", plan.errors);
        assert!(
            plan.errors[0]
                .problem
                .starts_with(&format!("{field}.{key}: not a key")),
            "{}",
            plan.errors[0].problem
        );
        assert_eq!(
            plan.errors[0].resource.name, "bad",
            "only the bad one fails"
        );
    }
    let good = "\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: good, namespace: web}\ndata: {.env: x, app.conf_1-2: y}\n";
    let plan = plan_of(&format!("{}---{good}", deployment("web", "web", 2)));
    assert!(plan.errors.is_empty(), "{:?}", plan.errors);
}
