//! Karmada's `propagateDeps`: the ConfigMaps, Secrets, ServiceAccounts and PVCs a workload
//! references follow it to its clusters, unless a policy of their own places them.

use std::collections::{BTreeMap, BTreeSet};

use super::policy::effective_namespace;
use super::{PlacedTemplates, Plan, ResourcePlan, Target};
use crate::object::{Object, ObjectRef, Origin, Scopes};

/// Places the dependencies of every placed workload whose policy propagates them on the
/// workload's clusters, as a resource of their own named `dependency of ...`.
pub(super) fn add_dependencies(
    templates: &[&Object],
    scopes: &Scopes,
    placed: &mut PlacedTemplates,
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
