//! Placing one template by its policy: the clusters it selects, then its replicas divided
//! among them (by weight, or by capacity over overflow tiers), and moved off unavailable
//! clusters.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::capacity::{
    Assignment, Capacity, Division, NotEnoughCapacity, ReplicaRequirements, RequirementsError,
    available_replicas, divide_in_tiers,
};
use super::errors::ResourceProblem;
use super::schedule::Infeasible;
use super::types::*;
use super::{
    Cluster, Failover, PlanInputs, Target, Warning, affinity_matches, divide_by_weight,
    select_clusters, tolerates,
};
use crate::object::Object;

/// Why a template goes to no cluster: its policy's placement, its replicas or the capacity.
#[derive(Debug, thiserror::Error)]
pub(super) enum PlaceError {
    /// The template's replica count is one Kubernetes refuses.
    #[error(transparent)]
    Replicas(#[from] ReplicaCountError),
    /// No cluster (group) satisfies the placement.
    #[error(transparent)]
    Infeasible(#[from] Infeasible),
    /// `weightPreference.dynamicWeight` names a strategy Karmada does not have.
    #[error("weightPreference.dynamicWeight {value:?} is not AvailableReplicas")]
    DynamicWeight { value: Option<String> },
    /// `replicaDivisionPreference` names a preference Karmada does not have.
    #[error("replicaDivisionPreference {value:?} is not Aggregated or Weighted")]
    DivisionPreference { value: String },
    /// A capacity-based division without a capacity to divide by.
    #[error(
        "replicaScheduling: {division} needs each cluster's available replicas: give `--capacity FILE` to plan/render (the agent reads them from the member clusters' Nodes and Pods)"
    )]
    NoCapacity { division: Division },
    /// The pod template's resource requests do not read.
    #[error(transparent)]
    Requirements(#[from] RequirementsError),
    /// The clusters cannot take the replicas.
    #[error("replicaScheduling: {division}")]
    NotEnoughCapacity {
        division: Division,
        #[source]
        source: NotEnoughCapacity,
    },
}

impl ResourceProblem for PlaceError {
    fn kind(&self) -> &'static str {
        match self {
            PlaceError::Replicas(_) => "invalid_replicas",
            PlaceError::Infeasible(_) => "no_feasible_cluster",
            PlaceError::DynamicWeight { .. } | PlaceError::DivisionPreference { .. } => {
                "invalid_policy"
            }
            PlaceError::NoCapacity { .. } => "no_capacity",
            PlaceError::Requirements(_) => "invalid_requests",
            PlaceError::NotEnoughCapacity { .. } => "not_enough_capacity",
        }
    }
}

/// A replica count Kubernetes would refuse, or a `spec` it cannot be written into.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum ReplicaCountError {
    /// `spec` is a string, a list or a number: each cluster's share cannot be written into it.
    #[error("spec: not a mapping")]
    SpecNotAMapping,
    /// `spec.replicas` is negative, over int32 or not a number.
    #[error("spec.replicas: {value} is not a replica count (0 to 2147483647)")]
    NotACount { value: Value },
}

/// A resource's targets, the `clusterAffinities` group that won, and its failover if any.
type Placed = (Vec<Target>, Option<String>, Option<Failover>);

/// Places one template by `placement`: the clusters it selects, then its replicas divided
/// among them (Duplicated, by static weights, or by capacity), moved off unavailable clusters
/// when Divided by weight. The error says why the template goes nowhere.
pub(super) fn place(
    placement: &Placement,
    template: &Object,
    clusters: &[Cluster],
    inputs: &PlanInputs,
    warnings: &mut Vec<Warning>,
    policy: &str,
) -> Result<Placed, PlaceError> {
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
    let (candidates, group) = select_clusters(placement, clusters, static_weights)?;

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
            ("Aggregated", _) => Division::Aggregated,
            (_, Some("AvailableReplicas")) => Division::DynamicWeight,
            (_, other) => {
                return Err(PlaceError::DynamicWeight {
                    value: other.map(str::to_string),
                });
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
        let targets = place_by_capacity(
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
        return Err(PlaceError::DivisionPreference {
            value: preference.to_string(),
        });
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

/// The replicas of a template whose `spec.replicas` placement divides
/// ([`crate::kinds::WorkloadKind::divides_replicas`]): 1 when it has none, as in Karmada,
/// whose templates the apiserver defaults to 1 (Duplicated keeps it absent, see `place`);
/// `None` for other kinds. A value Kubernetes would refuse (negative, over int32, not a
/// number) is an error naming it, never read as 1.
pub(super) fn replica_count(template: &Object) -> Result<Option<u64>, ReplicaCountError> {
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
        return Err(ReplicaCountError::SpecNotAMapping);
    }
    match template.value.pointer("/spec/replicas") {
        None | Some(Value::Null) => Ok(Some(1)),
        Some(value) => value
            .as_u64()
            .filter(|n| *n <= i32::MAX as u64)
            .map(Some)
            .ok_or_else(|| ReplicaCountError::NotACount {
                value: value.clone(),
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

/// Places a Divided template by capacity: each candidate's available replicas from
/// `capacity`, then [`divide_in_tiers`] over `tiers` (the candidates, then each overflow
/// tier's) by `assignment`, with `previous`, the resource's last division (empty offline: a
/// first schedule). Without a capacity the resource fails, naming what is missing. Candidates
/// the capacity does not list can take nothing (Karmada's estimator gives a cluster without a
/// resource summary 0), with a warning.
#[allow(clippy::too_many_arguments)]
fn place_by_capacity(
    division: Division,
    total: u64,
    template: &Object,
    tiers: &[Vec<&Cluster>],
    capacity: Option<&Capacity>,
    previous: &[(&str, u64)],
    assignment: Assignment,
    warnings: &mut Vec<Warning>,
    policy: &str,
) -> Result<Vec<Target>, PlaceError> {
    if total == 0 {
        // Karmada assigns a workload of 0 replicas to every candidate, with 0 replicas, without
        // asking any estimator.
        return Ok(tiers
            .iter()
            .flatten()
            .map(|c| Target {
                cluster: c.name.clone(),
                replicas: Some(0),
            })
            .collect());
    }
    let Some(capacity) = capacity else {
        return Err(PlaceError::NoCapacity { division });
    };
    let requirements = ReplicaRequirements::from_template(&template.value)?;
    let mut by_name: BTreeMap<&str, u64> = BTreeMap::new();
    for cluster in tiers.iter().flatten() {
        let resources = capacity.clusters.get(&cluster.name);
        if resources.is_none() {
            warnings.push(Warning {
                kind: "no_capacity",
                message: format!(
                    "{}: {}: {policy}: cluster {} has no entry in the capacity; it can take no replica",
                    template.origin,
                    template.object_ref(),
                    cluster.name
                ),
            });
        }
        by_name.insert(
            cluster.name.as_str(),
            available_replicas(resources, &requirements),
        );
    }
    let available: Vec<Vec<(&str, u64)>> = tiers
        .iter()
        .map(|tier| {
            tier.iter()
                .map(|c| {
                    (
                        c.name.as_str(),
                        by_name.get(c.name.as_str()).copied().unwrap_or(0),
                    )
                })
                .collect()
        })
        .collect();
    let shares = divide_in_tiers(division, assignment, total, &available, previous)
        .map_err(|source| PlaceError::NotEnoughCapacity { division, source })?;
    Ok(shares
        .into_iter()
        .map(|(cluster, n)| Target {
            cluster,
            replicas: Some(n),
        })
        .collect())
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
