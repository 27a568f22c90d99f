//! Placement: [`Rendered`] objects -> [`Plan`], the objects each member cluster must hold.
//!
//! Pure: no I/O. The rendered stream is split into the fleet (Kurator `Fleet`,
//! `AttachedCluster`), Karmada policies and resource templates. Each template gets one
//! propagation policy (Karmada's choice rules), which selects clusters and divides replicas;
//! then the override policies make each cluster's copy. A resource that cannot be placed fails
//! alone: it is reported in [`Plan::errors`] and every other resource is still planned.
//! See DESIGN.md section 2 and the README for the exact rules.
//!
//! [`plan_with`] tells the whole story; each step is a module:
//!
//! - `fleet`: the member clusters and the Fleet's default placement;
//! - `policy`: reading propagation and override policies, and matching them to templates;
//! - `checks`: names and keys no apiserver accepts;
//! - `workload_affinity`: workloads kept together or apart;
//! - `place`: one template's clusters and replicas, by `schedule` (cluster affinity,
//!   taints, spread, weights) and [`capacity`] (Karmada's estimator and dynamic division);
//! - `dependencies`: what a workload references follows it (`propagateDeps`);
//! - `copies`: each cluster's copies, with `overrides` (Karmada's overriders) applied;
//! - `diff`: how two plans differ.

pub mod capacity;
mod checks;
mod copies;
mod dependencies;
mod diff;
mod enums;
mod errors;
mod fleet;
mod overrides;
mod place;
mod policy;
mod schedule;
pub mod types;
mod workload_affinity;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use crate::object::{Object, ObjectRef, Origin, Scopes};
use crate::render::Rendered;
pub use capacity::{Assignment, Capacity};
pub use diff::{ReplicaChange, diff};
pub use errors::{PlanError, ResourceError};
pub use overrides::{ImageRef, OverrideError, OverriderError, apply_overriders, override_image};
use policy::{Override, Propagation};
pub use schedule::{
    Cluster, affinity_matches, apply_spread_constraints, divide_by_weight, select_clusters,
    tolerates,
};
use types::*;
use workload_affinity::{TemplateGroups, WorkloadGroups};

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

/// [`plan`] with everything [`PlanInputs`] adds.
pub fn plan_with(rendered: &Rendered, inputs: &PlanInputs) -> Result<Plan, PlanError> {
    let mut warnings = Vec::new();

    // Split the stream: the fleet, the policies, the templates.
    let Repo {
        fleets,
        attached,
        mut propagations,
        overrides,
        templates,
    } = Repo::split(rendered, &mut warnings)?;

    // The member clusters, and the Fleet's default placement.
    let clusters = fleet::read_clusters(&fleets, &attached, &mut warnings)?;
    for fleet in &fleets {
        if let Some(placement) = fleet.value.pointer("/spec/placement") {
            propagations.push(fleet::fleet_placement(fleet, placement, &mut warnings)?);
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
    let (mut placed, unselected) = place_templates(
        &templates,
        &propagations,
        &scopes,
        inputs,
        &mut plan,
        &mut warnings,
    )?;

    // propagateDeps: what a workload references follows it, unless a policy placed it.
    dependencies::add_dependencies(&templates, &scopes, &mut placed, &mut plan);
    warn_of_unselected(&unselected, &placed, &mut warnings);

    // Each cluster's copy: divided replicas, then every matching override in order.
    copies::make_copies(&templates, &overrides, &scopes, &mut plan);

    // Namespaces of propagated objects are created where missing; then apply order.
    copies::order_copies(&mut plan, &scopes, &mut warnings);
    plan.warnings = warnings;
    Ok(plan)
}

/// The rendered stream, split by what each object is to placement.
struct Repo<'r> {
    fleets: Vec<&'r Object>,
    attached: Vec<&'r Object>,
    propagations: Vec<Propagation>,
    overrides: Vec<Override>,
    templates: Vec<&'r Object>,
}

impl<'r> Repo<'r> {
    /// Splits the stream and reads the policies; a policy that does not read stops the plan.
    fn split(rendered: &'r Rendered, warnings: &mut Vec<Warning>) -> Result<Self, PlanError> {
        let mut repo = Repo {
            fleets: Vec::new(),
            attached: Vec::new(),
            propagations: Vec::new(),
            overrides: Vec::new(),
            templates: Vec::new(),
        };
        for object in &rendered.objects {
            match (object.group(), object.kind()) {
                (KURATOR_FLEET_GROUP, "Fleet") => repo.fleets.push(object),
                (KURATOR_CLUSTER_GROUP, "AttachedCluster") => repo.attached.push(object),
                (KARMADA_POLICY_GROUP, "PropagationPolicy" | "ClusterPropagationPolicy") => {
                    let propagation = policy::read_propagation(object)?;
                    policy::warn_of_unapplied_fields(object, &propagation.spec, warnings);
                    repo.propagations.push(propagation)
                }
                (KARMADA_POLICY_GROUP, "OverridePolicy" | "ClusterOverridePolicy") => {
                    repo.overrides.push(policy::read_override(object)?)
                }
                _ => repo.templates.push(object),
            }
        }
        Ok(repo)
    }
}

/// Per placed resource, its targets and whether its dependencies follow it (`propagateDeps`).
type PlacedTemplates = BTreeMap<ObjectRef, (Vec<Target>, bool)>;

/// Places each template, in the repo's order, into [`Plan::resources`]; a template that fails
/// goes to [`Plan::errors`]. Returns what was placed, and the templates no policy selects.
fn place_templates<'r>(
    templates: &[&'r Object],
    propagations: &[Propagation],
    scopes: &Scopes,
    inputs: &PlanInputs,
    plan: &mut Plan,
    warnings: &mut Vec<Warning>,
) -> Result<(PlacedTemplates, Vec<&'r Object>), PlanError> {
    let mut placed = PlacedTemplates::new();
    let mut unselected = Vec::new();
    let mut placed_copies = 0usize;
    let mut workload_groups = WorkloadGroups::default();
    for template in templates {
        if let Err(problem) = checks::check_names(template) {
            plan.errors.push(ResourceError::new(
                template.object_ref(),
                template.origin.clone(),
                None,
                None,
                &problem,
            ));
            continue;
        }
        let namespace = policy::effective_namespace(template, scopes);
        let Some(policy) = policy::choose_policy(propagations, template, &namespace) else {
            unselected.push(*template);
            continue;
        };
        let groups = TemplateGroups::of(&policy.spec.placement, template, &namespace);
        let allowed = workload_groups.allowed(&groups, &plan.clusters);
        let (targets, affinity_group, failover) = match place::place(
            &policy.spec.placement,
            template,
            &allowed,
            inputs,
            warnings,
            &policy.label,
        ) {
            Ok(targets) => targets,
            Err(problem) => {
                plan.errors.push(ResourceError::new(
                    template.object_ref(),
                    template.origin.clone(),
                    Some(policy.label.clone()),
                    None,
                    &problem,
                ));
                continue;
            }
        };
        workload_groups.record(groups, &targets);
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
    Ok((placed, unselected))
}

/// Warns of each template no policy selects and no workload took along as a dependency.
fn warn_of_unselected(
    unselected: &[&Object],
    placed: &PlacedTemplates,
    warnings: &mut Vec<Warning>,
) {
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
}

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

#[cfg(test)]
mod tests;
