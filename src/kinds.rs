//! Facts about Kubernetes kinds that several stages need, each in one table: which kinds run
//! Pods and where their pod spec is ([`WORKLOADS`], keyed by API group and kind), and the
//! order objects are applied in ([`apply_wave`]).
//!
//! Render, placement, apply and health all read these; none keeps a list of its own. The
//! exceptions are kustomize's built-in field specs (`src/render/kustomize/plugins.rs` and the
//! tables in `src/render/kustomize.rs`): they are kustomize's configuration, which Flotilla
//! reproduces byte for byte, not a fact about Kubernetes, so they stay kustomize's.

use serde_json::Value;

use crate::object::{is_builtin_group, split_api_version};

/// How [`crate::workload::assess`] reads a workload kind's `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusRule {
    /// Rollout finished, not past its deadline, no replica failure.
    Deployment,
    /// Every pod ready, revisions converged.
    StatefulSet,
    /// Every scheduled node runs an updated, available pod.
    DaemonSet,
    /// `Complete` or `Failed` conditions.
    Job,
}

/// A kind whose controller runs Pods from a pod spec inside the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkloadKind {
    /// API group, empty for the core group.
    pub group: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// JSON pointer to the pod spec (`containers`, `volumes`, ...).
    pub pod_spec: &'static str,
    /// Whether placement divides its `spec.replicas` among clusters (Deployments, ReplicaSets
    /// and StatefulSets); every cluster gets the other kinds whole, a ReplicationController's
    /// replicas included.
    pub divides_replicas: bool,
    /// Whether Karmada's image, command and args overriders find its containers when no
    /// predicate names a path (Karmada's `imageoverride.go` knows exactly these kinds).
    pub karmada_containers: bool,
    /// Its health rule, if it has one beyond the `Ready` condition.
    pub status: Option<StatusRule>,
}

impl WorkloadKind {
    /// JSON pointer to the pod spec's `containers` list.
    pub fn containers(&self) -> String {
        format!("{}/containers", self.pod_spec)
    }
}

const TEMPLATE: &str = "/spec/template/spec";

/// Every workload kind of Kubernetes itself.
pub const WORKLOADS: &[WorkloadKind] = &[
    WorkloadKind {
        group: "",
        kind: "Pod",
        pod_spec: "/spec",
        divides_replicas: false,
        karmada_containers: true,
        status: None,
    },
    WorkloadKind {
        group: "",
        kind: "ReplicationController",
        pod_spec: TEMPLATE,
        divides_replicas: false,
        karmada_containers: false,
        status: None,
    },
    WorkloadKind {
        group: "apps",
        kind: "Deployment",
        pod_spec: TEMPLATE,
        divides_replicas: true,
        karmada_containers: true,
        status: Some(StatusRule::Deployment),
    },
    WorkloadKind {
        group: "apps",
        kind: "ReplicaSet",
        pod_spec: TEMPLATE,
        divides_replicas: true,
        karmada_containers: true,
        status: None,
    },
    WorkloadKind {
        group: "apps",
        kind: "StatefulSet",
        pod_spec: TEMPLATE,
        divides_replicas: true,
        karmada_containers: true,
        status: Some(StatusRule::StatefulSet),
    },
    WorkloadKind {
        group: "apps",
        kind: "DaemonSet",
        pod_spec: TEMPLATE,
        divides_replicas: false,
        karmada_containers: true,
        status: Some(StatusRule::DaemonSet),
    },
    WorkloadKind {
        group: "batch",
        kind: "Job",
        pod_spec: TEMPLATE,
        divides_replicas: false,
        karmada_containers: true,
        status: Some(StatusRule::Job),
    },
    WorkloadKind {
        group: "batch",
        kind: "CronJob",
        pod_spec: "/spec/jobTemplate/spec/template/spec",
        divides_replicas: false,
        karmada_containers: false,
        status: None,
    },
];

/// The workload kind of this group and kind, if it is one.
pub fn workload(group: &str, kind: &str) -> Option<&'static WorkloadKind> {
    WORKLOADS
        .iter()
        .find(|workload| workload.group == group && workload.kind == kind)
}

/// The workload kind of an object, from its `apiVersion` and `kind`.
pub fn workload_of(object: &Value) -> Option<&'static WorkloadKind> {
    let text = |field: &str| object.get(field).and_then(Value::as_str).unwrap_or("");
    workload(split_api_version(text("apiVersion")).0, text("kind"))
}

/// The workload kind named `kind` in any group. Only where the tool Flotilla reproduces
/// matches kinds without their group: kustomize's field specs (a `Deployment` of any group
/// has kustomize's references) and Karmada's overriders (which switch on the kind).
pub fn workload_by_kind(kind: &str) -> Option<&'static WorkloadKind> {
    WORKLOADS.iter().find(|workload| workload.kind == kind)
}

/// The wave an object is applied in; lower waves first, prune goes the other way.
///
/// 0. CustomResourceDefinitions, so their kinds are served (apply waits until Established)
///    before anything else: cluster-scoped, they need no Namespace;
/// 1. Namespaces, before what lives in them;
/// 2. other cluster-scoped built-ins (ClusterRoles, StorageClasses, ...);
/// 3. namespaced built-ins (ConfigMaps, Secrets, Services, ...);
/// 4. workloads ([`WORKLOADS`]), after the ConfigMaps, Secrets and Services they use (as in
///    Helm's install order), so their Pods start with what they need, and the controllers'
///    reaction does not compete with the rest of the sync;
/// 5. custom resources, whatever their scope: they need their CRD served first.
///
/// `cluster_scoped` is the kind's scope where known (false when not).
pub fn apply_wave(group: &str, kind: &str, cluster_scoped: bool) -> u8 {
    match (group, kind) {
        ("apiextensions.k8s.io", "CustomResourceDefinition") => 0,
        ("", "Namespace") => 1,
        (group, _) if !is_builtin_group(group) => 5,
        _ if cluster_scoped => 2,
        (group, kind) if workload(group, kind).is_some() => 4,
        _ => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn workloads_are_keyed_by_group_and_kind() {
        assert_eq!(
            workload("apps", "Deployment").map(|w| w.pod_spec),
            Some(TEMPLATE)
        );
        assert_eq!(workload("example.com", "Deployment"), None);
        assert_eq!(workload("", "Deployment"), None);
        let cron = workload_of(&json!({"apiVersion": "batch/v1", "kind": "CronJob"}));
        assert_eq!(
            cron.map(|w| w.pod_spec),
            Some("/spec/jobTemplate/spec/template/spec")
        );
        assert_eq!(
            workload_of(&json!({"apiVersion": "v1", "kind": "Pod"})).map(|w| w.containers()),
            Some("/spec/containers".to_string())
        );
        assert_eq!(
            workload_by_kind("Deployment").map(|w| w.group),
            Some("apps")
        );
    }

    #[test]
    fn divided_kinds_keep_their_pod_spec_where_capacity_reads_it() {
        // `placement::capacity` reads a divided template's requests at `spec.template.spec`.
        for workload in WORKLOADS.iter().filter(|w| w.divides_replicas) {
            assert_eq!(workload.pod_spec, TEMPLATE, "{}", workload.kind);
        }
    }

    #[test]
    fn each_kind_is_in_the_table_once() {
        for (i, a) in WORKLOADS.iter().enumerate() {
            assert!(
                WORKLOADS[i + 1..].iter().all(|b| b.kind != a.kind),
                "{}",
                a.kind
            );
        }
    }

    #[test]
    fn crds_then_namespaces_then_cluster_scoped_then_namespaced_then_workloads_then_custom() {
        let waves = [
            apply_wave("apiextensions.k8s.io", "CustomResourceDefinition", true),
            apply_wave("", "Namespace", true),
            apply_wave("rbac.authorization.k8s.io", "ClusterRole", true),
            apply_wave("", "ConfigMap", false),
            apply_wave("apps", "Deployment", false),
            apply_wave("example.com", "Widget", true),
        ];
        assert_eq!(waves, [0, 1, 2, 3, 4, 5]);
    }
}
