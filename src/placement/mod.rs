//! Placement: [`Rendered`] objects -> [`Plan`], the objects each member cluster must hold.
//!
//! Pure: no I/O. The rendered stream is split into the fleet (Kurator `Fleet`,
//! `AttachedCluster`), Karmada policies and resource templates. Each template gets one
//! propagation policy (Karmada's choice rules), which selects clusters and divides replicas;
//! then the override policies make each cluster's copy. A resource that cannot be placed fails
//! alone: it is reported in [`Plan::errors`] and every other resource is still planned.
//! See DESIGN.md section 2 and the README for the exact rules.

pub mod capacity;
mod enums;
mod overrides;
mod schedule;
pub mod types;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::object::{Object, ObjectRef, Origin, Scopes};
use crate::render::Rendered;
pub use capacity::{Assignment, Capacity};
pub use overrides::{ImageRef, apply_overriders, override_image};
pub use schedule::{
    Cluster, affinity_matches, apply_spread_constraints, divide_by_weight, select_clusters,
    tolerates,
};
use types::*;

/// Namespaces every cluster has; Flotilla never creates (or later prunes) them.
const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// What every member cluster must hold for one commit, and how it was decided.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    /// The member clusters, by name.
    pub clusters: Vec<Cluster>,
    /// One entry per resource template: its policy and its clusters.
    pub resources: Vec<ResourcePlan>,
    /// Per cluster (every member has an entry), the objects it must hold, in apply order.
    #[serde(skip)]
    pub desired: BTreeMap<String, Vec<Object>>,
    /// Things a user should look at; none stops the plan.
    pub warnings: Vec<Warning>,
    /// Resources that could not be placed or overridden (for one cluster or all).
    pub errors: Vec<ResourceError>,
}

/// Where one resource template goes.
#[derive(Debug, Clone, Serialize)]
pub struct ResourcePlan {
    /// The template.
    pub resource: ObjectRef,
    /// Its file and document.
    pub origin: Origin,
    /// The policy that placed it (`PropagationPolicy web/nginx`), or none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The `clusterAffinities` group that won, when the policy has fallback groups.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affinity_group: Option<String>,
    /// The clusters that receive it, by name.
    pub targets: Vec<Target>,
    /// Set when its replicas were divided again because some of its clusters are unavailable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failover: Option<Failover>,
}

/// A Karmada-style failover of a Divided resource: the replicas planned for unavailable
/// clusters go to the remaining candidates, by the same weights. The unavailable clusters keep
/// their planned share (they cannot be reached to remove it; it serves again when they come back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failover {
    /// The unavailable clusters whose replicas moved.
    pub unavailable: Vec<String>,
    /// The division the policy plans when every cluster is available.
    pub planned: Vec<Target>,
}

/// One cluster's share of a resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Target {
    /// Cluster name.
    pub cluster: String,
    /// Replicas for replica-bearing kinds; `None` for everything else.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u64>,
}

/// Something in the fleet repo a user should look at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// A fixed name for the kind of warning (`unselected`, `empty_cluster`, `zero_share`, ...).
    pub kind: &'static str,
    /// What happened, naming the object, policy or cluster.
    pub message: String,
}

/// A resource that failed for one cluster or for all; the rest of the plan stands.
#[derive(Debug, Clone, Serialize, thiserror::Error)]
#[error("{origin}: {resource}: {}{problem}", cluster.as_ref().map(|c| format!("cluster {c}: ")).unwrap_or_default())]
pub struct ResourceError {
    /// The resource.
    pub resource: ObjectRef,
    /// Its file and document.
    pub origin: Origin,
    /// The policy involved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The cluster, when only one is affected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// What went wrong.
    pub problem: String,
}

/// Fleet or policy input that makes the whole plan meaningless; nothing is planned.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A fleet or policy object has a bad or unknown field.
    #[error("{origin}: {kind} {name}: {field}: {problem}")]
    InvalidField {
        /// Where the object is.
        origin: Origin,
        /// Its kind.
        kind: String,
        /// Its name.
        name: String,
        /// Dotted path of the field (`spec.placement.clusterAffinity.foo`).
        field: String,
        /// What is wrong.
        problem: String,
    },
    /// Two declarations of one cluster.
    #[error("cluster {name}: declared twice, in {first} and in {second}")]
    DuplicateCluster {
        /// The cluster.
        name: String,
        /// First declaration.
        first: Origin,
        /// Second declaration.
        second: Origin,
    },
    /// The repo declares no member cluster.
    #[error(
        "no member clusters: the fleet repo has no Fleet (fleet.kurator.dev/v1alpha1) or AttachedCluster"
    )]
    NoClusters,
    /// The objects placed, counted once per cluster each goes to, went over the limit.
    #[error(
        "{origin}: {resource}: more than {limit} objects placed, counted once per cluster each goes to (raise the limit with --max-placed-objects)"
    )]
    TooManyPlaced {
        /// The limit.
        limit: usize,
        /// The resource whose placement went over it.
        resource: ObjectRef,
        /// Its file and document.
        origin: Origin,
    },
}

impl PlanError {
    /// A fixed, low-cardinality name for this error, fit for a metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            PlanError::InvalidField { .. } => "invalid_field",
            PlanError::DuplicateCluster { .. } => "duplicate_cluster",
            PlanError::NoClusters => "no_clusters",
            PlanError::TooManyPlaced { .. } => "limit",
        }
    }
}

/// A parsed propagation policy (or the Fleet's default placement).
struct Propagation {
    label: String,
    namespaced: bool,
    namespace: String,
    name: String,
    spec: PropagationSpec,
    /// The Fleet's placement: selects what no policy does.
    fallback: bool,
}

/// A parsed override policy.
struct Override {
    label: String,
    namespaced: bool,
    namespace: String,
    name: String,
    spec: OverrideSpec,
}

/// Plans a rendered fleet repo: every template to its clusters, with overrides applied.
pub fn plan(rendered: &Rendered) -> Result<Plan, PlanError> {
    plan_with_unavailable(rendered, &BTreeSet::new())
}

/// [`plan`], with the replicas of Divided resources moved off `unavailable` clusters (see
/// [`Failover`]). Duplicated resources and kinds without replicas are planned as usual.
pub fn plan_with_unavailable(
    rendered: &Rendered,
    unavailable: &BTreeSet<String>,
) -> Result<Plan, PlanError> {
    plan_with(
        rendered,
        &PlanInputs {
            unavailable,
            capacity: None,
            previous: None,
            max_placed_objects: crate::limits::RenderLimits::default().max_placed_objects,
        },
    )
}

/// What a plan knows beyond the fleet repo.
#[derive(Debug, Clone, Copy)]
pub struct PlanInputs<'a> {
    /// Clusters that cannot be reached: Divided replicas move off them (see [`Failover`]).
    pub unavailable: &'a BTreeSet<String>,
    /// Each cluster's free resources, for `Aggregated` and `dynamicWeight` division; without
    /// it, resources that use them fail.
    pub capacity: Option<&'a Capacity>,
    /// The last plan's divisions (the agent's); `None` offline, where every capacity-based
    /// division is a first schedule.
    pub previous: Option<Previous<'a>>,
    /// Copies of objects the plan may hold, all clusters together (`--max-placed-objects`):
    /// memory grows with objects times the clusters each goes to, which `--max-objects`
    /// alone does not bound.
    pub max_placed_objects: usize,
}

/// Each resource's replicas per cluster in one plan: what Karmada keeps in a binding's
/// `spec.clusters`, the previous result its scheduler divides from.
pub type Divisions = BTreeMap<ObjectRef, Vec<(String, u64)>>;

/// The previous divisions a capacity-based division starts from, and how (Karmada's
/// assignment mode): [`Assignment::Steady`] keeps what was placed when replicas are scaled;
/// [`Assignment::Fresh`] divides again by capacity, counting each cluster's previous replicas
/// as room.
#[derive(Debug, Clone, Copy)]
pub struct Previous<'a> {
    /// Per resource, its last division.
    pub divisions: &'a Divisions,
    /// How to treat it.
    pub assignment: Assignment,
}

impl Plan {
    /// The division of every resource with replicas, to give the next plan as
    /// [`PlanInputs::previous`].
    pub fn divisions(&self) -> Divisions {
        self.resources
            .iter()
            .filter(|r| r.targets.iter().any(|t| t.replicas.is_some()))
            .map(|r| {
                let shares = r
                    .targets
                    .iter()
                    .map(|t| (t.cluster.clone(), t.replicas.unwrap_or(0)))
                    .collect();
                (r.resource.clone(), shares)
            })
            .collect()
    }
}

/// Whether some propagation policy divides replicas by the clusters' capacity (`Aggregated`
/// or `dynamicWeight`): then a plan needs [`PlanInputs::capacity`].
pub fn needs_capacity(rendered: &Rendered) -> bool {
    rendered.objects.iter().any(|object| {
        object.group() == KARMADA_POLICY_GROUP
            && matches!(
                object.kind(),
                "PropagationPolicy" | "ClusterPropagationPolicy"
            )
            && object
                .value
                .pointer("/spec/placement/replicaScheduling")
                .is_some_and(|scheduling| {
                    scheduling
                        .get("replicaDivisionPreference")
                        .and_then(Value::as_str)
                        == Some("Aggregated")
                        || scheduling
                            .pointer("/weightPreference/dynamicWeight")
                            .is_some()
                })
    })
}

/// [`plan`] with everything [`PlanInputs`] adds.
pub fn plan_with(rendered: &Rendered, inputs: &PlanInputs) -> Result<Plan, PlanError> {
    let mut warnings = Vec::new();

    // Split the stream: the fleet, the policies, the templates.
    let mut fleets = Vec::new();
    let mut attached = Vec::new();
    let mut propagations = Vec::new();
    let mut overrides = Vec::new();
    let mut templates = Vec::new();
    for object in &rendered.objects {
        match (object.group(), object.kind()) {
            (KURATOR_FLEET_GROUP, "Fleet") => fleets.push(object),
            (KURATOR_CLUSTER_GROUP, "AttachedCluster") => attached.push(object),
            (KARMADA_POLICY_GROUP, "PropagationPolicy" | "ClusterPropagationPolicy") => {
                let propagation = read_propagation(object)?;
                warn_of_unapplied_fields(object, &propagation.spec, &mut warnings);
                propagations.push(propagation)
            }
            (KARMADA_POLICY_GROUP, "OverridePolicy" | "ClusterOverridePolicy") => {
                overrides.push(read_override(object)?)
            }
            _ => templates.push(object),
        }
    }

    // The member clusters, and the Fleet's default placement.
    let clusters = read_clusters(&fleets, &attached, &mut warnings)?;
    for fleet in &fleets {
        if let Some(placement) = fleet.value.pointer("/spec/placement") {
            propagations.push(fleet_placement(fleet, placement, &mut warnings)?);
        }
    }

    let scopes = Scopes::from_objects(templates.iter().copied());
    let mut plan = Plan {
        desired: clusters
            .iter()
            .map(|c| (c.name.clone(), Vec::new()))
            .collect(),
        clusters,
        ..Default::default()
    };

    // Place every template with the one policy that wins for it.
    let mut placed: BTreeMap<ObjectRef, (Vec<Target>, bool)> = BTreeMap::new();
    let mut unselected = Vec::new();
    let mut placed_copies = 0usize;
    // Karmada's workloadAffinity groups, in the order templates are placed (the repo's): where
    // the workloads of each (namespace, `key=value`) group went.
    let mut affinity_groups: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    let mut anti_affinity_groups: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for template in &templates {
        if let Err(problem) = check_names(template) {
            plan.errors.push(ResourceError {
                resource: template.object_ref(),
                origin: template.origin.clone(),
                policy: None,
                cluster: None,
                problem,
            });
            continue;
        }
        let namespace = effective_namespace(template, &scopes);
        let Some(policy) = choose_policy(&propagations, template, &namespace) else {
            unselected.push(*template);
            continue;
        };
        let workload_affinity = policy.spec.placement.workload_affinity.as_ref();
        let group_of = |term: Option<&WorkloadAffinityTerm>| {
            let key = &term?.group_by_label_key;
            let (_, value) = template.labels().find(|(k, _)| k == key)?;
            Some((namespace.clone(), format!("{key}={value}")))
        };
        let affinity = group_of(workload_affinity.and_then(|w| w.affinity.as_ref()));
        let anti_affinity = group_of(workload_affinity.and_then(|w| w.anti_affinity.as_ref()));
        // Hard filters: with its affinity group's workloads (anywhere, while the group has
        // none yet), never with its anti-affinity group's.
        let allowed: std::borrow::Cow<[Cluster]> = if affinity.is_none() && anti_affinity.is_none()
        {
            std::borrow::Cow::Borrowed(&plan.clusters)
        } else {
            std::borrow::Cow::Owned(
                plan.clusters
                    .iter()
                    .filter(|cluster| {
                        let with =
                            |groups: &BTreeMap<(String, String), BTreeSet<String>>,
                             group: &Option<(String, String)>| {
                                group
                                    .as_ref()
                                    .and_then(|g| groups.get(g))
                                    .map(|clusters| clusters.contains(&cluster.name))
                            };
                        with(&affinity_groups, &affinity).unwrap_or(true)
                            && !with(&anti_affinity_groups, &anti_affinity).unwrap_or(false)
                    })
                    .cloned()
                    .collect(),
            )
        };
        let (targets, affinity_group, failover) = match place(
            &policy.spec.placement,
            template,
            &allowed,
            inputs,
            &mut warnings,
            &policy.label,
        ) {
            Ok(targets) => targets,
            Err(problem) => {
                plan.errors.push(ResourceError {
                    resource: template.object_ref(),
                    origin: template.origin.clone(),
                    policy: Some(policy.label.clone()),
                    cluster: None,
                    problem,
                });
                continue;
            }
        };
        for (groups, group) in [
            (&mut affinity_groups, affinity),
            (&mut anti_affinity_groups, anti_affinity),
        ] {
            if let Some(group) = group
                && !targets.is_empty()
            {
                groups
                    .entry(group)
                    .or_default()
                    .extend(targets.iter().map(|t| t.cluster.clone()));
            }
        }
        // Counted as placed, before any copy is made: thousands of clusters times thousands
        // of objects must stop here, not in the allocator.
        placed_copies += targets.len();
        if placed_copies > inputs.max_placed_objects {
            return Err(PlanError::TooManyPlaced {
                limit: inputs.max_placed_objects,
                resource: template.object_ref(),
                origin: template.origin.clone(),
            });
        }
        placed.insert(
            template.object_ref(),
            (targets.clone(), policy.spec.propagate_deps),
        );
        plan.resources.push(ResourcePlan {
            resource: template.object_ref(),
            origin: template.origin.clone(),
            policy: Some(policy.label.clone()),
            affinity_group,
            targets,
            failover,
        });
    }

    // propagateDeps: what a workload references follows it, unless a policy placed it.
    add_dependencies(&templates, &scopes, &mut placed, &mut plan);
    for template in unselected {
        if !placed.contains_key(&template.object_ref()) {
            warnings.push(Warning {
                kind: "unselected",
                message: format!(
                    "{}: {}: no propagation policy selects it; it goes to no cluster",
                    template.origin,
                    template.object_ref()
                ),
            });
        }
    }

    // Each cluster's copy: divided replicas, then every matching override in order.
    let by_ref: BTreeMap<ObjectRef, &Object> =
        templates.iter().map(|t| (t.object_ref(), *t)).collect();
    let clusters_by_name: BTreeMap<&str, &Cluster> =
        plan.clusters.iter().map(|c| (c.name.as_str(), c)).collect();
    for resource in &plan.resources {
        let Some(template) = by_ref.get(&resource.resource) else {
            continue;
        };
        // Which override policies apply does not depend on the cluster: decide it once.
        let namespace = effective_namespace(template, &scopes);
        let matching = matching_overrides(&overrides, template, &namespace);
        for target in &resource.targets {
            let Some(cluster) = clusters_by_name.get(target.cluster.as_str()) else {
                continue;
            };
            let mut copy = (*template).clone();
            if let Some(replicas) = target.replicas {
                copy.value["spec"]["replicas"] = json!(replicas);
            }
            match apply_overrides(&matching, &mut copy, cluster) {
                Ok(()) => {
                    if let Some(objects) = plan.desired.get_mut(&cluster.name) {
                        objects.push(copy);
                    }
                }
                Err(problem) => plan.errors.push(ResourceError {
                    resource: resource.resource.clone(),
                    origin: resource.origin.clone(),
                    policy: None,
                    cluster: Some(cluster.name.clone()),
                    problem,
                }),
            }
        }
    }

    // Namespaces of propagated objects are created where missing; then apply order.
    for (cluster, objects) in &mut plan.desired {
        add_missing_namespaces(objects, &scopes);
        objects.sort_by_cached_key(|o| (apply_rank(o, &scopes), o.object_ref()));
        if objects.is_empty() {
            warnings.push(Warning {
                kind: "empty_cluster",
                message: format!("cluster {cluster}: receives no resource"),
            });
        }
    }
    plan.warnings = warnings;
    Ok(plan)
}

/// How one resource's share of one cluster changes between two plans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicaChange {
    /// The resource.
    pub resource: ObjectRef,
    /// The cluster.
    pub cluster: String,
    /// Before: `None` absent, `Some(None)` present without replicas, `Some(Some(n))` n replicas.
    pub before: Option<Option<u64>>,
    /// After, in the same form.
    pub after: Option<Option<u64>>,
}

/// Every (resource, cluster) whose presence or replicas differ between two plans.
pub fn diff(before: &Plan, after: &Plan) -> Vec<ReplicaChange> {
    let shares = |plan: &Plan| -> BTreeMap<(ObjectRef, String), Option<u64>> {
        plan.resources
            .iter()
            .flat_map(|r| {
                r.targets
                    .iter()
                    .map(|t| ((r.resource.clone(), t.cluster.clone()), t.replicas))
            })
            .collect()
    };
    let (old, new) = (shares(before), shares(after));
    let keys: BTreeSet<&(ObjectRef, String)> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter_map(|key| {
            let (b, a) = (old.get(key).copied(), new.get(key).copied());
            (b != a).then(|| ReplicaChange {
                resource: key.0.clone(),
                cluster: key.1.clone(),
                before: b,
                after: a,
            })
        })
        .collect()
}

// ----- reading the fleet and the policies -----

/// Deserialises `spec` strictly; the error names the field by its dotted path.
fn read_spec<T: DeserializeOwned>(object: &Object) -> Result<T, PlanError> {
    let invalid = |field: String, problem: String| PlanError::InvalidField {
        origin: object.origin.clone(),
        kind: object.kind().to_string(),
        name: object.name().to_string(),
        field,
        problem,
    };
    if let Some(map) = object.value.as_object()
        && let Some(field) = map
            .keys()
            .find(|k| !["apiVersion", "kind", "metadata", "spec", "status"].contains(&k.as_str()))
    {
        return Err(invalid(field.clone(), "unknown field".into()));
    }
    let spec = object
        .value
        .get("spec")
        .cloned()
        .unwrap_or_else(|| json!({}));
    enums::check(object.kind(), &spec).map_err(|e| invalid(e.field, e.problem))?;
    serde_path_to_error::deserialize(spec).map_err(|error| {
        let path = error.path().to_string();
        let field = if path == "." {
            "spec".into()
        } else {
            format!("spec.{path}")
        };
        invalid(field, error.into_inner().to_string())
    })
}

/// Names an apiserver refuses for every kind: a name that is `.` or `..`, holds `/` or `%`, or
/// is longer than 253 bytes; a namespace that is not a DNS label (RFC 1123, at most 63); a
/// kind or apiVersion no resource can have (they become URL and file path parts).
fn check_names(template: &Object) -> Result<(), String> {
    let name = template.name();
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.contains(['/', '%'])
        || name.len() > 253
    {
        return Err(format!(
            "metadata.name {name:?}: not a name Kubernetes accepts (not empty, `.` or `..`, no `/` or `%`, at most 253 bytes)"
        ));
    }
    let namespace = template.namespace();
    let label = |s: &str| {
        s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    };
    if !namespace.is_empty() && !label(namespace) {
        return Err(format!(
            "metadata.namespace {namespace:?}: not a DNS label (lowercase letters, digits and `-`, at most 63)"
        ));
    }
    // A kind is a CRD's `names.kind`: its lowercase form must be a DNS-1035 label.
    let kind = template.kind();
    if !kind.starts_with(|c: char| c.is_ascii_alphabetic()) || !label(&kind.to_ascii_lowercase()) {
        return Err(format!(
            "kind {kind:?}: not a kind Kubernetes accepts (a letter, then letters, digits and `-`, at most 63)"
        ));
    }
    // apiVersion is `[group/]version`: the group a DNS subdomain, the version a DNS label.
    let api_version = template.api_version();
    let (group, version) = crate::object::split_api_version(api_version);
    let group_ok = group.is_empty()
        || (group.len() <= 253 && group.split('.').all(|part| !part.is_empty() && label(part)));
    if !group_ok || version.is_empty() || !label(version) {
        return Err(format!(
            "apiVersion {api_version:?}: not an apiVersion Kubernetes accepts (`[group/]version`, the group a DNS subdomain, the version a DNS label)"
        ));
    }
    check_data_keys(template)
}

/// A v1 ConfigMap's or Secret's data keys become file names in a volume: the apiserver refuses
/// any but letters, digits, `-`, `_` and `.` (not `.`, `..` or a leading `..`, at most 253).
/// kustomize's generators write such keys all the same (`literals: ["../x=1"]`).
fn check_data_keys(template: &Object) -> Result<(), String> {
    if !template.group().is_empty() || !matches!(template.kind(), "ConfigMap" | "Secret") {
        return Ok(());
    }
    for field in ["data", "binaryData", "stringData"] {
        let Some(Value::Object(entries)) = template.value.get(field) else {
            continue;
        };
        for key in entries.keys() {
            let valid = !key.is_empty()
                && key.len() <= 253
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
                && !key.starts_with("..")
                && key != ".";
            if !valid {
                return Err(format!(
                    "{field}.{key}: not a key Kubernetes accepts (letters, digits, `-`, `_` and `.`; not `.`, `..` or a leading `..`; at most 253)"
                ));
            }
        }
    }
    Ok(())
}

/// Karmada fields Flotilla accepts but whose effect its plan does not have: said in `plan`,
/// never silently dropped. (The other accepted fields - failover, suspension, conflict
/// resolution... - are about Karmada's controllers, not about where a template goes.)
fn warn_of_unapplied_fields(object: &Object, spec: &PropagationSpec, warnings: &mut Vec<Warning>) {
    let placement = &spec.placement;
    let mut fields = Vec::new();
    if !placement.divides_by_capacity()
        && placement
            .cluster_affinities
            .iter()
            .any(|term| !term.overflow_affinities.is_empty())
    {
        fields.push((
            "spec.placement.clusterAffinities[].overflowAffinities",
            "it applies only to Aggregated or dynamicWeight division (Karmada refuses it with any other); only each term's own clusters are used",
        ));
    }
    if spec.schedule_priority.is_some() {
        fields.push((
            "spec.schedulePriority",
            "templates are placed independently, so their order changes nothing",
        ));
    }
    for (field, effect) in fields {
        warnings.push(Warning {
            kind: "field_not_applied",
            message: format!(
                "{}: {}: {field}: accepted, but Flotilla's plan does not apply it: {effect}",
                object.origin,
                policy_label(object)
            ),
        });
    }
}

fn policy_label(object: &Object) -> String {
    if object.namespace().is_empty() {
        format!("{} {}", object.kind(), object.name())
    } else {
        format!("{} {}/{}", object.kind(), object.namespace(), object.name())
    }
}

fn read_propagation(object: &Object) -> Result<Propagation, PlanError> {
    let namespaced = object.kind() == "PropagationPolicy";
    Ok(Propagation {
        label: policy_label(object),
        namespaced,
        namespace: namespace_or_default(object.namespace()),
        name: object.name().to_string(),
        spec: read_spec(object)?,
        fallback: false,
    })
}

fn read_override(object: &Object) -> Result<Override, PlanError> {
    let namespaced = object.kind() == "OverridePolicy";
    let mut spec: OverrideSpec = read_spec(object)?;
    // Karmada's deprecated single-rule form is one more rule, after `overrideRules`.
    if let Some(overriders) = spec.overriders.take() {
        spec.override_rules.push(OverrideRule {
            target_cluster: spec.target_cluster.take(),
            overriders,
        });
    }
    Ok(Override {
        label: policy_label(object),
        namespaced,
        namespace: namespace_or_default(object.namespace()),
        name: object.name().to_string(),
        spec,
    })
}

/// The namespace of a namespaced object (a policy) that may name none.
fn namespace_or_default(namespace: &str) -> String {
    crate::object::landing_namespace(namespace, false).to_string()
}

/// Reads a Fleet's `spec.placement` as a Karmada placement, dropping (with a warning) the
/// fields a Karmada `Placement` lacks, as Kurator's articles show extra ones.
fn fleet_placement(
    fleet: &Object,
    placement: &Value,
    warnings: &mut Vec<Warning>,
) -> Result<Propagation, PlanError> {
    let mut value = placement.clone();
    loop {
        match serde_path_to_error::deserialize::<_, Placement>(value.clone()) {
            Ok(placement) => {
                return Ok(Propagation {
                    label: format!("Fleet {} (spec.placement)", fleet.name()),
                    namespaced: false,
                    namespace: String::new(),
                    name: fleet.name().to_string(),
                    spec: PropagationSpec {
                        placement,
                        priority: i32::MIN,
                        ..Default::default()
                    },
                    fallback: true,
                });
            }
            Err(error) => {
                let path: Vec<String> = error.path().iter().map(|s| s.to_string()).collect();
                let message = error.inner().to_string();
                let removed = message.starts_with("unknown field") && remove_at(&mut value, &path);
                if !removed {
                    return Err(PlanError::InvalidField {
                        origin: fleet.origin.clone(),
                        kind: "Fleet".into(),
                        name: fleet.name().to_string(),
                        field: format!("spec.placement.{}", path.join(".")),
                        problem: message,
                    });
                }
                warnings.push(Warning {
                    kind: "fleet_placement_field",
                    message: format!(
                        "{}: Fleet {}: spec.placement.{}: not a field of a Karmada Placement; ignored",
                        fleet.origin,
                        fleet.name(),
                        path.join(".")
                    ),
                });
            }
        }
    }
}

/// Removes the entry at `path` (map keys and list indices); false when nothing was there.
fn remove_at(value: &mut Value, path: &[String]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut current = value;
    for segment in parents {
        let next = match current {
            Value::Object(map) => map.get_mut(segment),
            Value::Array(list) => segment.parse::<usize>().ok().and_then(|i| list.get_mut(i)),
            _ => None,
        };
        match next {
            Some(next) => current = next,
            None => return false,
        }
    }
    current
        .as_object_mut()
        .is_some_and(|map| map.remove(last).is_some())
}

/// The member clusters: every Fleet's entries, labels merged with their AttachedClusters.
/// Without a Fleet, the AttachedClusters themselves are the members.
/// Why a cluster name cannot be one: it names a kubeconfig context, a directory of
/// `render --out` and a label value, so what no Kubernetes name can be is refused for every
/// command alike (`plan` used to accept `../x` that `render --out` refused).
fn cluster_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name == "." || name == ".." {
        Some("is `.` or `..`")
    } else if name.contains(['/', '\\', '%', '\0']) {
        Some("contains `/`, `\\`, `%` or NUL, which no Kubernetes name may")
    } else if name.len() > 253 {
        Some("is longer than 253 bytes")
    } else {
        None
    }
}

fn read_clusters(
    fleets: &[&Object],
    attached: &[&Object],
    warnings: &mut Vec<Warning>,
) -> Result<Vec<Cluster>, PlanError> {
    let mut clusters: BTreeMap<String, (Cluster, Origin)> = BTreeMap::new();
    for fleet in fleets {
        let spec: FleetSpec = read_spec(fleet)?;
        for (index, entry) in spec.clusters.into_iter().enumerate() {
            if let Some(problem) = cluster_name_problem(&entry.name) {
                return Err(PlanError::InvalidField {
                    origin: fleet.origin.clone(),
                    kind: "Fleet".into(),
                    name: fleet.name().to_string(),
                    field: format!("spec.clusters[{index}].name"),
                    problem: format!("{:?} {problem}", entry.name),
                });
            }
            let cluster = Cluster {
                name: entry.name.clone(),
                labels: entry.labels,
                provider: entry.provider,
                region: entry.region,
                zones: entry.zones,
                taints: entry.taints,
                kubeconfig_secret: None,
            };
            if let Some((_, first)) = clusters.get(&entry.name) {
                return Err(PlanError::DuplicateCluster {
                    name: entry.name,
                    first: first.clone(),
                    second: fleet.origin.clone(),
                });
            }
            clusters.insert(entry.name, (cluster, fleet.origin.clone()));
        }
    }
    for object in attached {
        let spec: AttachedClusterSpec = read_spec(object)?;
        let secret = spec.kubeconfig.and_then(|k| match k.secret_ref {
            Some(secret) => Some(secret),
            None => k.name.map(|name| SecretKeyRef {
                name,
                key: k.key.unwrap_or_default(),
            }),
        });
        let name = object.name().to_string();
        if let Some(problem) = cluster_name_problem(&name) {
            return Err(PlanError::InvalidField {
                origin: object.origin.clone(),
                kind: "AttachedCluster".into(),
                name: name.clone(),
                field: "metadata.name".into(),
                problem: format!("{name:?} {problem}"),
            });
        }
        let cluster = match clusters.get_mut(&name) {
            Some((cluster, _)) => cluster,
            None if fleets.is_empty() => {
                clusters.insert(name.clone(), (Cluster::new(&name), object.origin.clone()));
                &mut clusters.get_mut(&name).expect("just inserted").0
            }
            None => {
                warnings.push(Warning {
                    kind: "attached_cluster_not_in_fleet",
                    message: format!(
                        "{}: AttachedCluster {name}: no Fleet lists it; it is not a member",
                        object.origin
                    ),
                });
                continue;
            }
        };
        for (key, value) in object.labels() {
            cluster.labels.insert(key.to_string(), value.to_string());
        }
        cluster.kubeconfig_secret = secret;
    }
    if clusters.is_empty() {
        return Err(PlanError::NoClusters);
    }
    Ok(clusters.into_values().map(|(c, _)| c).collect())
}

// ----- choosing the policy -----

/// The namespace a template lands in: none for cluster-scoped kinds, `default` when unset.
fn effective_namespace(template: &Object, scopes: &Scopes) -> String {
    scopes.landing_namespace(template).to_string()
}

/// How specifically a selector matches a template (Karmada's implicit priority):
/// 3 by name, 2 by label selector, 1 by type only; `None` when it does not match.
fn selector_priority(
    selector: &ResourceSelector,
    template: &Object,
    namespace: &str,
) -> Option<u8> {
    if selector.api_version != template.api_version() || selector.kind != template.kind() {
        return None;
    }
    if let Some(ns) = &selector.namespace
        && ns != namespace
    {
        return None;
    }
    if let Some(name) = &selector.name {
        return (name == template.name()).then_some(3);
    }
    if let Some(label_selector) = &selector.label_selector {
        let labels = template
            .labels()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        return label_selector.matches(&labels).then_some(2);
    }
    Some(1)
}

fn best_selector_priority(
    selectors: &[ResourceSelector],
    template: &Object,
    namespace: &str,
) -> Option<u8> {
    selectors
        .iter()
        .filter_map(|s| selector_priority(s, template, namespace))
        .max()
}

/// Karmada's choice among matching propagation policies: namespaced over cluster-scoped, then
/// higher `priority`, then the more specific selector, then the lower policy name.
fn choose_policy<'a>(
    policies: &'a [Propagation],
    template: &Object,
    namespace: &str,
) -> Option<&'a Propagation> {
    let matched = policies.iter().filter_map(|policy| {
        // A namespaced policy only sees templates of its own namespace.
        if policy.namespaced && (namespace.is_empty() || policy.namespace != namespace) {
            return None;
        }
        let implicit = if policy.fallback {
            0
        } else {
            best_selector_priority(&policy.spec.resource_selectors, template, namespace)?
        };
        Some((policy, implicit))
    });
    matched
        .max_by(|(a, ai), (b, bi)| {
            (!a.fallback, a.namespaced, a.spec.priority, ai)
                .cmp(&(!b.fallback, b.namespaced, b.spec.priority, bi))
                .then_with(|| b.name.cmp(&a.name))
        })
        .map(|(policy, _)| policy)
}

// ----- placing one template -----

/// The replicas of a template whose `spec.replicas` placement divides
/// ([`crate::kinds::WorkloadKind::divides_replicas`]): 1 when it has none, as in Karmada,
/// whose templates the apiserver defaults to 1 (Duplicated keeps it absent, see `place`);
/// `None` for other kinds. A value Kubernetes would refuse (negative, over int32, not a
/// number) is an error naming it, never read as 1.
fn replica_count(template: &Object) -> Result<Option<u64>, String> {
    if !crate::kinds::workload(template.group(), template.kind())
        .is_some_and(|workload| workload.divides_replicas)
    {
        return Ok(None);
    }
    // Each cluster's copy gets its share written into `spec`: a `spec` that is a string or a
    // list made that write panic.
    if template
        .value
        .get("spec")
        .is_some_and(|spec| !spec.is_object() && !spec.is_null())
    {
        return Err("spec: not a mapping".into());
    }
    match template.value.pointer("/spec/replicas") {
        None | Some(Value::Null) => Ok(Some(1)),
        Some(value) => value
            .as_u64()
            .filter(|n| *n <= i32::MAX as u64)
            .map(Some)
            .ok_or_else(|| {
                format!("spec.replicas: {value} is not a replica count (0 to 2147483647)")
            }),
    }
}

/// The tiers a capacity-based division fills in order: the winning group's candidates, then
/// each of its `overflowAffinities` (Karmada v1.18): the clusters a tier selects and the policy
/// tolerates, reachable, in no earlier tier (a cluster counts in the first tier that names
/// it), by name. Spread constraints apply to the group's own candidates only.
fn overflow_tiers<'a>(
    placement: &Placement,
    group: Option<&str>,
    clusters: &'a [Cluster],
    candidates: Vec<&'a Cluster>,
    unavailable: &BTreeSet<String>,
) -> Vec<Vec<&'a Cluster>> {
    let term = placement
        .cluster_affinities
        .iter()
        .find(|term| Some(term.affinity_name.as_str()) == group);
    let mut seen: BTreeSet<&str> = candidates.iter().map(|c| c.name.as_str()).collect();
    // The group's own clusters, unreachable ones too, are never an overflow tier's.
    if let Some(term) = term {
        let own = term.affinity();
        seen.extend(
            clusters
                .iter()
                .filter(|c| affinity_matches(&own, c))
                .map(|c| c.name.as_str()),
        );
    }
    let mut tiers = vec![candidates];
    for overflow in term.map_or(&[][..], |t| &t.overflow_affinities) {
        let affinity = overflow.affinity();
        let mut tier: Vec<&Cluster> = clusters
            .iter()
            .filter(|c| affinity_matches(&affinity, c))
            .filter(|c| tolerates(&placement.cluster_tolerations, c))
            .filter(|c| seen.insert(c.name.as_str()))
            .filter(|c| !unavailable.contains(&c.name))
            .collect();
        tier.sort_by(|a, b| a.name.cmp(&b.name));
        tiers.push(tier);
    }
    tiers
}

/// A resource's targets, the `clusterAffinities` group that won, and its failover if any.
type Placed = (Vec<Target>, Option<String>, Option<Failover>);

fn place(
    placement: &Placement,
    template: &Object,
    clusters: &[Cluster],
    inputs: &PlanInputs,
    warnings: &mut Vec<Warning>,
    policy: &str,
) -> Result<Placed, String> {
    let PlanInputs {
        unavailable,
        capacity,
        previous,
        ..
    } = *inputs;
    let scheduling = placement
        .replica_scheduling
        .clone()
        .unwrap_or(ReplicaScheduling {
            replica_scheduling_type: Some("Duplicated".into()),
            ..Default::default()
        });
    let divided = scheduling
        .replica_scheduling_type
        .as_deref()
        .unwrap_or("Divided")
        == "Divided";
    let preference = scheduling
        .replica_division_preference
        .as_deref()
        .unwrap_or("Weighted");
    let weights = scheduling.weight_preference.clone().unwrap_or_default();
    let replicas = replica_count(template)?;
    let static_weights = divided && !weights.static_weight_list.is_empty();
    let (candidates, group) =
        select_clusters(placement, clusters, static_weights).map_err(|e| e.0)?;

    let Some(total) = replicas.filter(|_| divided) else {
        // Duplicated, or a kind without replicas: every candidate gets the template as is. A
        // template without `spec.replicas` stays without, so whatever scales it in the member
        // (an HPA) owns the field there.
        let declared = replicas.filter(|_| template.value.pointer("/spec/replicas").is_some());
        let targets = candidates
            .iter()
            .map(|c| Target {
                cluster: c.name.clone(),
                replicas: declared,
            })
            .collect();
        return Ok((targets, group, None));
    };
    if preference == "Aggregated" || (preference == "Weighted" && weights.dynamic_weight.is_some())
    {
        // Karmada divides by capacity; unreachable clusters are no candidates, as its
        // not-ready taint keeps them out. Offline there is no previous division, so this is
        // a first schedule; the agent gives its last plan's.
        let division = match (preference, weights.dynamic_weight.as_deref()) {
            ("Aggregated", _) => capacity::Division::Aggregated,
            (_, Some("AvailableReplicas")) => capacity::Division::DynamicWeight,
            (_, other) => {
                return Err(format!(
                    "weightPreference.dynamicWeight {other:?} is not AvailableReplicas"
                ));
            }
        };
        let reachable: Vec<&Cluster> = candidates
            .into_iter()
            .filter(|c| !unavailable.contains(&c.name))
            .collect();
        let tiers = overflow_tiers(
            placement,
            group.as_deref(),
            clusters,
            reachable,
            unavailable,
        );
        let last: Vec<(&str, u64)> = previous
            .and_then(|p| p.divisions.get(&template.object_ref()))
            .map(|shares| shares.iter().map(|(c, n)| (c.as_str(), *n)).collect())
            .unwrap_or_default();
        let targets = capacity::place(
            division,
            total,
            template,
            &tiers,
            capacity,
            &last,
            previous.map_or(Assignment::Steady, |p| p.assignment),
            warnings,
            policy,
        )?;
        return Ok((targets, group, None));
    }
    if !matches!(preference, "Weighted") {
        return Err(format!(
            "replicaDivisionPreference {preference:?} is not Aggregated or Weighted"
        ));
    }
    // A cluster's weight is the largest of the entries that select it; none selecting any
    // candidate means equal weights.
    let mut cluster_weights: Vec<(&str, u64)> = candidates
        .iter()
        .map(|c| {
            let weight = weights
                .static_weight_list
                .iter()
                .filter(|w| affinity_matches(&w.target_cluster, c))
                .map(|w| w.weight.max(0) as u64)
                .max()
                .unwrap_or(0);
            (c.name.as_str(), weight)
        })
        .collect();
    if cluster_weights.iter().all(|(_, w)| *w == 0) {
        for entry in &mut cluster_weights {
            entry.1 = 1;
        }
    }
    let shares = divide_by_weight(total, &cluster_weights);
    let mut targets = Vec::new();
    for ((name, weight), share) in cluster_weights.iter().zip(&shares) {
        if *share == 0 {
            if *weight > 0 {
                warnings.push(Warning {
                    kind: "zero_share",
                    message: format!(
                        "{}: {}: {policy}: cluster {name} has weight {weight} but its share of {total} replicas rounds to 0; it receives nothing",
                        template.origin,
                        template.object_ref()
                    ),
                });
            }
            continue;
        }
        targets.push(Target {
            cluster: name.to_string(),
            replicas: Some(*share),
        });
    }
    let failover = fail_over(total, &cluster_weights, &targets, unavailable);
    match failover {
        Some((targets, failover)) => Ok((targets, group, Some(failover))),
        None => Ok((targets, group, None)),
    }
}

/// Divides `total` again without the unavailable clusters that have a share, which keep their
/// planned share; `None` when no planned target is unavailable or no candidate remains.
fn fail_over(
    total: u64,
    cluster_weights: &[(&str, u64)],
    planned: &[Target],
    unavailable: &BTreeSet<String>,
) -> Option<(Vec<Target>, Failover)> {
    let lost: Vec<String> = planned
        .iter()
        .filter(|t| unavailable.contains(&t.cluster))
        .map(|t| t.cluster.clone())
        .collect();
    if lost.is_empty() {
        return None;
    }
    let mut remaining: Vec<(&str, u64)> = cluster_weights
        .iter()
        .filter(|(name, _)| !unavailable.contains(*name))
        .copied()
        .collect();
    if remaining.is_empty() {
        return None;
    }
    // Remaining candidates that no weight entry selects still run the workload rather than
    // leave it with fewer replicas than planned.
    if remaining.iter().all(|(_, weight)| *weight == 0) {
        for entry in &mut remaining {
            entry.1 = 1;
        }
    }
    let shares = divide_by_weight(total, &remaining);
    let mut targets: Vec<Target> = remaining
        .iter()
        .zip(shares)
        .filter(|(_, share)| *share > 0)
        .map(|((name, _), share)| Target {
            cluster: name.to_string(),
            replicas: Some(share),
        })
        .collect();
    targets.extend(
        planned
            .iter()
            .filter(|t| unavailable.contains(&t.cluster))
            .cloned(),
    );
    targets.sort_by(|a, b| a.cluster.cmp(&b.cluster));
    let failover = Failover {
        unavailable: lost,
        planned: planned.to_vec(),
    };
    Some((targets, failover))
}

// ----- dependencies -----

/// ConfigMaps, Secrets, ServiceAccounts and PVCs a workload's pod spec names.
fn pod_dependencies(template: &Object) -> Vec<(&'static str, String)> {
    // Karmada's dependency interpreter knows workloads by group and kind.
    if crate::kinds::workload(template.group(), template.kind()).is_none() {
        return Vec::new();
    }
    crate::object::pod_references(&template.value)
        .into_iter()
        .filter_map(|(kind, pointer)| {
            let name = template.value.pointer(&pointer)?.as_str()?;
            Some((kind, name.to_string()))
        })
        .collect()
}

fn add_dependencies(
    templates: &[&Object],
    scopes: &Scopes,
    placed: &mut BTreeMap<ObjectRef, (Vec<Target>, bool)>,
    plan: &mut Plan,
) {
    let mut extra: BTreeMap<ObjectRef, (BTreeSet<String>, String, Origin)> = BTreeMap::new();
    for template in templates {
        let Some((targets, true)) = placed.get(&template.object_ref()) else {
            continue;
        };
        let namespace = effective_namespace(template, scopes);
        for (kind, name) in pod_dependencies(template) {
            let Some(dependency) = templates.iter().find(|t| {
                t.kind() == kind
                    && t.group().is_empty()
                    && t.name() == name
                    && effective_namespace(t, scopes) == namespace
            }) else {
                continue;
            };
            if placed.contains_key(&dependency.object_ref()) {
                continue; // a policy of its own decides
            }
            let entry = extra.entry(dependency.object_ref()).or_insert_with(|| {
                (
                    BTreeSet::new(),
                    format!("dependency of {}", template.object_ref()),
                    dependency.origin.clone(),
                )
            });
            entry.0.extend(targets.iter().map(|t| t.cluster.clone()));
        }
    }
    for (resource, (clusters, policy, origin)) in extra {
        let targets: Vec<Target> = clusters
            .into_iter()
            .map(|cluster| Target {
                cluster,
                replicas: None,
            })
            .collect();
        placed.insert(resource.clone(), (targets.clone(), false));
        plan.resources.push(ResourcePlan {
            resource,
            origin,
            policy: Some(policy),
            affinity_group: None,
            targets,
            failover: None,
        });
    }
}

// ----- overrides -----

/// The override policies that select a template, in Karmada's order: cluster-wide policies
/// first, then the namespace's; within each, match-all before label selectors before names,
/// then by policy name. Later ones win.
fn matching_overrides<'a>(
    policies: &'a [Override],
    template: &Object,
    namespace: &str,
) -> Vec<&'a Override> {
    let mut matching: Vec<(&Override, u8)> = policies
        .iter()
        .filter(|p| !p.namespaced || (!namespace.is_empty() && p.namespace == namespace))
        .filter_map(|p| {
            let priority = if p.spec.resource_selectors.is_empty() {
                Some(1)
            } else {
                best_selector_priority(&p.spec.resource_selectors, template, namespace)
            };
            priority.map(|priority| (p, priority))
        })
        .collect();
    matching
        .sort_by(|(a, ap), (b, bp)| (a.namespaced, ap, &a.name).cmp(&(b.namespaced, bp, &b.name)));
    matching.into_iter().map(|(policy, _)| policy).collect()
}

/// Applies the rules of `policies` whose target includes `cluster` to one cluster's copy.
fn apply_overrides(
    policies: &[&Override],
    object: &mut Object,
    cluster: &Cluster,
) -> Result<(), String> {
    for policy in policies {
        for (index, rule) in policy.spec.override_rules.iter().enumerate() {
            if rule
                .target_cluster
                .as_ref()
                .is_some_and(|affinity| !affinity_matches(affinity, cluster))
            {
                continue;
            }
            let identity = object.object_ref();
            apply_overriders(&mut object.value, &rule.overriders)
                .map_err(|e| format!("{}: overrideRules[{index}]: {e}", policy.label))?;
            // An override changes an object, never which object it is: a removed name or a
            // replaced kind would apply something else in the cluster's name.
            let after = object.object_ref();
            if after != identity
                || after.name.is_empty()
                || object.api_version() != identity.api_version()
            {
                return Err(format!(
                    "{}: overrideRules[{index}]: may not change the object's apiVersion, kind, name or namespace (it would become {})",
                    policy.label,
                    if after.name.is_empty() {
                        "an object without a name".to_string()
                    } else {
                        after.to_string()
                    }
                ));
            }
            // Nor may it leave a replica count the apiserver refuses (`-5`, `"ten"`).
            replica_count(object)
                .map_err(|e| format!("{}: overrideRules[{index}]: {e}", policy.label))?;
        }
    }
    Ok(())
}

// ----- namespaces and order -----

fn add_missing_namespaces(objects: &mut Vec<Object>, scopes: &Scopes) {
    let declared: BTreeSet<String> = objects
        .iter()
        .filter(|o| o.kind() == "Namespace" && o.group().is_empty())
        .map(|o| o.name().to_string())
        .collect();
    let needed: BTreeSet<String> = objects
        .iter()
        .filter(|o| !scopes.is_cluster_scoped(o.group(), o.kind()))
        .map(|o| scopes.landing_namespace(o).to_string())
        .filter(|ns| !declared.contains(ns) && !SYSTEM_NAMESPACES.contains(&ns.as_str()))
        .collect();
    for namespace in needed {
        objects.push(Object::new(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
            Origin::generated("(namespace of propagated objects)"),
        ));
    }
}

/// The apply wave ([`crate::kinds::apply_wave`]), with the scope the repo's CRDs give.
fn apply_rank(object: &Object, scopes: &Scopes) -> u8 {
    let (group, kind) = (object.group(), object.kind());
    crate::kinds::apply_wave(group, kind, scopes.is_cluster_scoped(group, kind))
}

#[cfg(test)]
mod tests;
