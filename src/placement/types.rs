//! The fleet and policy kinds as users write them: Kurator's `Fleet` and `AttachedCluster`,
//! Karmada's propagation and override policies. Unknown fields are refused (`deny_unknown_fields`)
//! unless Karmada has them; fields Karmada has that mean nothing offline are accepted as-is.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::labels::{LabelSelector, Requirement};

/// API group of Karmada's policies.
pub const KARMADA_POLICY_GROUP: &str = "policy.karmada.io";
/// API group of Kurator's `Fleet`.
pub const KURATOR_FLEET_GROUP: &str = "fleet.kurator.dev";
/// API group of Kurator's `AttachedCluster`.
pub const KURATOR_CLUSTER_GROUP: &str = "cluster.kurator.dev";

// ----- the fleet -----

/// `Fleet.spec`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FleetSpec {
    /// The member clusters.
    #[serde(default)]
    pub clusters: Vec<FleetCluster>,
    /// Default placement for resources no policy selects (read leniently, see `placement`).
    pub placement: Option<Value>,
    /// Kurator's fleet plugins; Flotilla does not install them.
    pub plugin: Option<Value>,
}

/// One entry of `Fleet.spec.clusters`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FleetCluster {
    /// Cluster name; also the kubeconfig context and the `AttachedCluster` name.
    pub name: String,
    /// Kurator's reference kind (`AttachedCluster`).
    pub kind: Option<String>,
    /// Labels policies select on.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Cloud provider (`fieldSelector` key `provider`).
    pub provider: Option<String>,
    /// Region (`fieldSelector` key `region`).
    pub region: Option<String>,
    /// Zones (`fieldSelector` key `zone` matches any of them).
    #[serde(default)]
    pub zones: Vec<String>,
    /// Taints that policies must tolerate.
    #[serde(default)]
    pub taints: Vec<Taint>,
}

/// A cluster taint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Taint {
    /// Taint key.
    pub key: String,
    /// Taint value.
    #[serde(default)]
    pub value: String,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: String,
}

/// `AttachedCluster.spec`: how to reach one cluster from the hub.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AttachedClusterSpec {
    /// The Secret with the kubeconfig.
    pub kubeconfig: Option<KubeconfigSource>,
    /// Kurator's hub reference; not used by Flotilla.
    pub hub_ref: Option<Value>,
}

/// Either `{secretRef: {name, key}}` (Flotilla) or `{name, key}` (Kurator).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeconfigSource {
    /// The Secret reference.
    pub secret_ref: Option<SecretKeyRef>,
    /// Secret name (Kurator's form).
    pub name: Option<String>,
    /// Key in the Secret (Kurator's form).
    pub key: Option<String>,
}

/// A key of a Secret in the agent's namespace of the hub.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    /// Secret name.
    pub name: String,
    /// Key within the Secret.
    #[serde(default)]
    pub key: String,
}

// ----- propagation -----

/// `PropagationPolicy.spec` and `ClusterPropagationPolicy.spec`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PropagationSpec {
    /// Which resource templates the policy places.
    #[serde(default)]
    pub resource_selectors: Vec<ResourceSelector>,
    /// Whether referenced ConfigMaps, Secrets, ServiceAccounts and PVCs follow the workload.
    #[serde(default)]
    pub propagate_deps: bool,
    /// Where the resources go.
    #[serde(default)]
    pub placement: Placement,
    /// Explicit priority; higher wins when several policies match.
    #[serde(default)]
    pub priority: i32,
    /// Karmada fields that change nothing in an offline plan.
    pub preemption: Option<Value>,
    /// See `preemption`.
    pub dependent_overrides: Option<Value>,
    /// See `preemption`.
    pub scheduler_name: Option<Value>,
    /// See `preemption`.
    pub failover: Option<Value>,
    /// See `preemption`.
    pub conflict_resolution: Option<Value>,
    /// See `preemption`.
    pub activation_preference: Option<Value>,
    /// See `preemption`.
    pub suspension: Option<Value>,
    /// See `preemption`.
    pub preserve_resources_on_deletion: Option<Value>,
    /// See `preemption` (deprecated in Karmada).
    pub association: Option<Value>,
    /// Karmada's scheduling priority (`priorityClassSource: KubePriorityClass` and a
    /// PriorityClass name): the order Karmada's scheduler takes bindings in. Every template is
    /// placed independently here, so the order changes nothing; accepted and reported by `plan`.
    pub schedule_priority: Option<SchedulePriority>,
}

/// Karmada's `SchedulePriority`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SchedulePriority {
    /// `KubePriorityClass` (the only value Karmada's CRD allows).
    pub priority_class_source: String,
    /// The `scheduling.k8s.io/v1` PriorityClass.
    pub priority_class_name: String,
}

/// Selects resource templates by type, and optionally namespace, name or labels.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceSelector {
    /// `apiVersion` of the template.
    pub api_version: String,
    /// `kind` of the template.
    pub kind: String,
    /// Namespace of the template.
    pub namespace: Option<String>,
    /// Name of the template; when set, `labelSelector` is ignored.
    pub name: Option<String>,
    /// Labels of the template.
    pub label_selector: Option<LabelSelector>,
}

/// Karmada's `Placement`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Placement {
    /// Which clusters may receive the resources.
    pub cluster_affinity: Option<ClusterAffinity>,
    /// Ordered fallback groups; the first feasible one wins.
    #[serde(default)]
    pub cluster_affinities: Vec<ClusterAffinityTerm>,
    /// Taints this placement tolerates.
    #[serde(default)]
    pub cluster_tolerations: Vec<Toleration>,
    /// How many groups (clusters, regions, ...) to spread over.
    #[serde(default)]
    pub spread_constraints: Vec<SpreadConstraint>,
    /// How replicas are shared out.
    pub replica_scheduling: Option<ReplicaScheduling>,
    /// Karmada's workload affinity groups (v1.17+, behind its `WorkloadAffinity` gate): hard
    /// filters, taken in the repo's order.
    pub workload_affinity: Option<WorkloadAffinity>,
}

/// Karmada's `WorkloadAffinity`: templates with one value of a label key together (affinity)
/// or apart (anti-affinity), per cluster.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadAffinity {
    /// Go where the group's other workloads are.
    pub affinity: Option<WorkloadAffinityTerm>,
    /// Keep away from the group's other workloads.
    pub anti_affinity: Option<WorkloadAffinityTerm>,
}

/// One workload affinity term.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadAffinityTerm {
    /// The template label whose value names the group.
    pub group_by_label_key: String,
}

/// Karmada's `ClusterAffinity`: every set part must hold.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterAffinity {
    /// Cluster labels.
    pub label_selector: Option<LabelSelector>,
    /// Cluster fields: `provider`, `region`, `zone`.
    pub field_selector: Option<FieldSelector>,
    /// Cluster names (empty: any).
    #[serde(default)]
    pub cluster_names: Vec<String>,
    /// Clusters never selected.
    #[serde(default)]
    pub exclude: Vec<String>,
}

impl Placement {
    /// Whether replicas are divided by the clusters' capacity: `Divided` (the default once
    /// `replicaScheduling` is set) with `Aggregated` or a `dynamicWeight`.
    pub fn divides_by_capacity(&self) -> bool {
        self.replica_scheduling.as_ref().is_some_and(|s| {
            s.replica_scheduling_type.as_deref().unwrap_or("Divided") == "Divided"
                && (s.replica_division_preference.as_deref() == Some("Aggregated")
                    || s.weight_preference
                        .as_ref()
                        .is_some_and(|w| w.dynamic_weight.is_some()))
        })
    }
}

/// Declares a named group of clusters: [`ClusterAffinity`]'s fields repeated rather than
/// `#[serde(flatten)]`ed, because serde cannot combine `flatten` with `deny_unknown_fields`,
/// and unknown fields must be refused; then the group's own fields.
macro_rules! named_affinity {
    ($(#[$doc:meta])* $name:ident { $($(#[$field_doc:meta])* $field:ident: $type:ty,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        pub struct $name {
            /// The group's name, shown in the plan.
            pub affinity_name: String,
            /// As in [`ClusterAffinity`].
            pub label_selector: Option<LabelSelector>,
            /// As in [`ClusterAffinity`].
            pub field_selector: Option<FieldSelector>,
            /// As in [`ClusterAffinity`].
            #[serde(default)]
            pub cluster_names: Vec<String>,
            /// As in [`ClusterAffinity`].
            #[serde(default)]
            pub exclude: Vec<String>,
            $($(#[$field_doc])* #[serde(default)] pub $field: $type,)*
        }

        impl $name {
            /// The affinity part of the group.
            pub fn affinity(&self) -> ClusterAffinity {
                ClusterAffinity {
                    label_selector: self.label_selector.clone(),
                    field_selector: self.field_selector.clone(),
                    cluster_names: self.cluster_names.clone(),
                    exclude: self.exclude.clone(),
                }
            }
        }
    };
}

named_affinity!(
    /// One group of `clusterAffinities`.
    ClusterAffinityTerm {
        /// Karmada's overflow tiers (v1.18+; with Aggregated or dynamic-weight division
        /// only): groups filled in order once the earlier ones are full, emptied in reverse.
        overflow_affinities: Vec<OverflowClusterAffinity>,
    }
);

named_affinity!(
    /// One overflow tier of a `clusterAffinities` term (Karmada's `OverflowClusterAffinity`).
    OverflowClusterAffinity {}
);

/// Requirements on cluster fields.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FieldSelector {
    /// All must hold; keys are `provider`, `region` and `zone`.
    #[serde(default)]
    pub match_expressions: Vec<Requirement>,
}

/// A toleration of cluster taints (as for Pods and Nodes).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Toleration {
    /// Taint key; empty with `Exists` tolerates every taint.
    #[serde(default)]
    pub key: String,
    /// `Equal` (default) or `Exists`.
    pub operator: Option<String>,
    /// Value for `Equal`.
    #[serde(default)]
    pub value: String,
    /// Effect; empty tolerates every effect.
    #[serde(default)]
    pub effect: String,
    /// Accepted; eviction timing does not apply to a plan.
    pub toleration_seconds: Option<i64>,
}

/// Karmada's `SpreadConstraint`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpreadConstraint {
    /// `cluster`, `region`, `zone` or `provider`.
    pub spread_by_field: Option<String>,
    /// A cluster label to group by instead of a field.
    pub spread_by_label: Option<String>,
    /// Most groups to use.
    pub max_groups: Option<u32>,
    /// Fewest groups; fewer is an error.
    pub min_groups: Option<u32>,
}

/// Karmada's `ReplicaSchedulingStrategy`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplicaScheduling {
    /// `Duplicated` or `Divided` (Karmada's default).
    pub replica_scheduling_type: Option<String>,
    /// `Weighted` (default) or `Aggregated`.
    pub replica_division_preference: Option<String>,
    /// Weights for `Weighted`.
    pub weight_preference: Option<WeightPreference>,
}

/// Karmada's `ClusterPreferences`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WeightPreference {
    /// Static weights per group of clusters.
    #[serde(default)]
    pub static_weight_list: Vec<StaticClusterWeight>,
    /// `AvailableReplicas`: needs each cluster's free capacity.
    pub dynamic_weight: Option<String>,
}

/// A weight for the clusters an affinity selects.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StaticClusterWeight {
    /// Which clusters get this weight.
    pub target_cluster: ClusterAffinity,
    /// The weight, at least 1: Karmada's CRD says `+kubebuilder:validation:Minimum=1`, so its
    /// apiserver refuses the policy otherwise (a negative weight once became 0 here, and
    /// weights of 0 an equal split).
    #[serde(deserialize_with = "at_least_one")]
    pub weight: i64,
}

fn at_least_one<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    let weight = i64::deserialize(deserializer)?;
    if weight < 1 {
        return Err(serde::de::Error::custom(format!(
            "{weight}: must be at least 1, as Karmada requires"
        )));
    }
    Ok(weight)
}

// ----- overrides -----

/// `OverridePolicy.spec` and `ClusterOverridePolicy.spec`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OverrideSpec {
    /// Which templates are overridden; empty means all (in the namespace, for OverridePolicy).
    #[serde(default)]
    pub resource_selectors: Vec<ResourceSelector>,
    /// The rules, applied in order.
    #[serde(default)]
    pub override_rules: Vec<OverrideRule>,
    /// Deprecated single-rule form: the target of `overriders`.
    pub target_cluster: Option<ClusterAffinity>,
    /// Deprecated single-rule form.
    pub overriders: Option<Overriders>,
}

/// One override rule.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OverrideRule {
    /// The clusters it applies to (absent: all).
    pub target_cluster: Option<ClusterAffinity>,
    /// What it changes.
    #[serde(default)]
    pub overriders: Overriders,
}

/// Karmada's `Overriders`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Overriders {
    /// RFC 6902 operations.
    #[serde(default)]
    pub plaintext: Vec<PlaintextOverrider>,
    /// Image changes.
    #[serde(default)]
    pub image_overrider: Vec<ImageOverrider>,
    /// Container command changes.
    #[serde(default)]
    pub command_overrider: Vec<CommandArgsOverrider>,
    /// Container args changes.
    #[serde(default)]
    pub args_overrider: Vec<CommandArgsOverrider>,
    /// Label changes.
    #[serde(default)]
    pub labels_overrider: Vec<LabelAnnotationOverrider>,
    /// Annotation changes.
    #[serde(default)]
    pub annotations_overrider: Vec<LabelAnnotationOverrider>,
    /// Changes to a JSON or YAML document held in a string field.
    #[serde(default)]
    pub field_overrider: Vec<FieldOverrider>,
}

/// Karmada's `FieldOverrider`: RFC 6902 operations on the JSON or YAML document in the string
/// field `fieldPath` (a ConfigMap's `config.yaml`, say).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FieldOverrider {
    /// JSON pointer to the string field.
    pub field_path: String,
    /// Operations when the document is JSON.
    #[serde(default)]
    pub json: Vec<DocumentPatchOperation>,
    /// Operations when the document is YAML.
    #[serde(default)]
    pub yaml: Vec<DocumentPatchOperation>,
}

/// One operation inside an embedded document.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DocumentPatchOperation {
    /// JSON pointer inside the document.
    pub sub_path: String,
    /// `add`, `remove` or `replace`.
    pub operator: String,
    /// The value for add and replace.
    pub value: Option<Value>,
}

/// A JSON patch operation.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlaintextOverrider {
    /// JSON pointer.
    pub path: String,
    /// `add`, `remove` or `replace`.
    pub operator: String,
    /// The value for add and replace.
    pub value: Option<Value>,
}

/// Changes one part of container images.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageOverrider {
    /// Where the image is; absent: every container of a workload.
    pub predicate: Option<ImagePredicate>,
    /// `Registry`, `Repository` or `Tag`.
    pub component: String,
    /// `add`, `remove` or `replace`.
    pub operator: String,
    /// The value for add and replace.
    #[serde(default)]
    pub value: String,
}

/// The path of one image field.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImagePredicate {
    /// JSON pointer to the image string.
    pub path: String,
}

/// Changes a container's command or args.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommandArgsOverrider {
    /// The container.
    pub container_name: String,
    /// `add` (append) or `remove` (every equal element).
    pub operator: String,
    /// The elements.
    #[serde(default)]
    pub value: Vec<String>,
}

/// Changes labels or annotations.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelAnnotationOverrider {
    /// `add`, `remove` or `replace`.
    pub operator: String,
    /// The pairs.
    #[serde(default)]
    pub value: BTreeMap<String, String>,
}
