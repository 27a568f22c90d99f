//! Each member cluster's copies: a placed template with its share of replicas and every
//! matching override applied, then the Namespaces the copies land in, in apply order.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use super::errors::ResourceProblem;
use super::overrides::{OverrideError, apply_overriders};
use super::place::{ReplicaCountError, replica_count};
use super::policy::{Override, effective_namespace, matching_overrides};
use super::{Cluster, Plan, ResourceError, Warning, affinity_matches};
use crate::object::{Object, ObjectRef, Origin, Scopes};

/// Namespaces every cluster has; Flotilla never creates (or later prunes) them.
const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Fills [`Plan::desired`]: for every target of every planned resource, the template with its
/// replicas and the override policies that select it. A copy an override breaks is reported in
/// [`Plan::errors`] for its cluster and left out.
pub(super) fn make_copies(
    templates: &[&Object],
    overrides: &[Override],
    scopes: &Scopes,
    plan: &mut Plan,
) {
    let by_ref: BTreeMap<ObjectRef, &Object> =
        templates.iter().map(|t| (t.object_ref(), *t)).collect();
    let clusters_by_name: BTreeMap<&str, &Cluster> =
        plan.clusters.iter().map(|c| (c.name.as_str(), c)).collect();
    for resource in &plan.resources {
        let Some(template) = by_ref.get(&resource.resource) else {
            continue;
        };
        // Which override policies apply does not depend on the cluster: decide it once.
        let namespace = effective_namespace(template, scopes);
        let matching = matching_overrides(overrides, template, &namespace);
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
                Err(problem) => plan.errors.push(ResourceError::new(
                    resource.resource.clone(),
                    resource.origin.clone(),
                    None,
                    Some(cluster.name.clone()),
                    &problem,
                )),
            }
        }
    }
}

/// Applies the rules of `policies` whose target includes `cluster` to one cluster's copy.
fn apply_overrides(
    policies: &[&Override],
    object: &mut Object,
    cluster: &Cluster,
) -> Result<(), OverrideRuleError> {
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
            let failed = |problem| OverrideRuleError {
                policy: policy.label.clone(),
                rule: index,
                problem,
            };
            apply_overriders(&mut object.value, &rule.overriders)
                .map_err(|e| failed(RuleProblem::Overriders(e)))?;
            // An override changes an object, never which object it is: a removed name or a
            // replaced kind would apply something else in the cluster's name.
            let after = object.object_ref();
            if after != identity
                || after.name.is_empty()
                || object.api_version() != identity.api_version()
            {
                return Err(failed(RuleProblem::ChangesIdentity {
                    became: if after.name.is_empty() {
                        "an object without a name".to_string()
                    } else {
                        after.to_string()
                    },
                }));
            }
            // Nor may it leave a replica count the apiserver refuses (`-5`, `"ten"`).
            replica_count(object).map_err(|e| failed(RuleProblem::Replicas(e)))?;
        }
    }
    Ok(())
}

/// A rule of an override policy that could not make one cluster's copy.
#[derive(Debug, thiserror::Error)]
#[error("{policy}: overrideRules[{rule}]")]
pub(super) struct OverrideRuleError {
    /// The policy (`OverridePolicy web/eu`).
    policy: String,
    /// The rule's index in `overrideRules`.
    rule: usize,
    /// What went wrong.
    #[source]
    problem: RuleProblem,
}

/// What a rule of an override policy did wrong.
#[derive(Debug, thiserror::Error)]
pub(super) enum RuleProblem {
    /// One of its overriders failed.
    #[error(transparent)]
    Overriders(OverrideError),
    /// It made the copy another object.
    #[error(
        "may not change the object's apiVersion, kind, name or namespace (it would become {became})"
    )]
    ChangesIdentity { became: String },
    /// It left a replica count the apiserver refuses (`-5`, `"ten"`).
    #[error(transparent)]
    Replicas(ReplicaCountError),
}

impl ResourceProblem for OverrideRuleError {
    fn kind(&self) -> &'static str {
        match self.problem {
            RuleProblem::Overriders(_) => "override_failed",
            RuleProblem::ChangesIdentity { .. } => "override_changes_identity",
            RuleProblem::Replicas(_) => "invalid_replicas",
        }
    }
}

/// Adds the Namespaces each cluster's copies land in where missing, sorts every cluster's
/// objects into apply order, and warns of clusters that receive nothing.
pub(super) fn order_copies(plan: &mut Plan, scopes: &Scopes, warnings: &mut Vec<Warning>) {
    for (cluster, objects) in &mut plan.desired {
        add_missing_namespaces(objects, scopes);
        objects.sort_by_cached_key(|o| (apply_rank(o, scopes), o.object_ref()));
        if objects.is_empty() {
            warnings.push(Warning {
                kind: "empty_cluster",
                message: format!("cluster {cluster}: receives no resource"),
            });
        }
    }
}

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
