//! Karmada's propagation and override policies: read strictly from the repo, and matched to
//! templates by Karmada's rules (resource selectors, their implicit priority, `priority`,
//! namespaced before cluster-wide).

use serde::de::DeserializeOwned;
use serde_json::json;

use super::types::*;
use super::{PlanError, Warning, enums};
use crate::object::{Object, Scopes};

/// A parsed propagation policy (or the Fleet's default placement).
pub(super) struct Propagation {
    pub(super) label: String,
    pub(super) namespaced: bool,
    pub(super) namespace: String,
    pub(super) name: String,
    pub(super) spec: PropagationSpec,
    /// The Fleet's placement: selects what no policy does.
    pub(super) fallback: bool,
}

/// A parsed override policy.
pub(super) struct Override {
    pub(super) label: String,
    pub(super) namespaced: bool,
    pub(super) namespace: String,
    pub(super) name: String,
    pub(super) spec: OverrideSpec,
}

/// Reads a `PropagationPolicy` or `ClusterPropagationPolicy`.
pub(super) fn read_propagation(object: &Object) -> Result<Propagation, PlanError> {
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

/// Deserialises `spec` strictly; the error names the field by its dotted path.
pub(super) fn read_spec<T: DeserializeOwned>(object: &Object) -> Result<T, PlanError> {
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

/// How errors and warnings name a policy: `PropagationPolicy web/nginx`.
fn policy_label(object: &Object) -> String {
    if object.namespace().is_empty() {
        format!("{} {}", object.kind(), object.name())
    } else {
        format!("{} {}/{}", object.kind(), object.namespace(), object.name())
    }
}

/// The namespace of a namespaced object (a policy) that may name none.
fn namespace_or_default(namespace: &str) -> String {
    crate::object::landing_namespace(namespace, false).to_string()
}

/// Karmada fields Flotilla accepts but whose effect its plan does not have: said in `plan`,
/// never silently dropped. (The other accepted fields - failover, suspension, conflict
/// resolution... - are about Karmada's controllers, not about where a template goes.)
pub(super) fn warn_of_unapplied_fields(
    object: &Object,
    spec: &PropagationSpec,
    warnings: &mut Vec<Warning>,
) {
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

/// Reads an `OverridePolicy` or `ClusterOverridePolicy`.
pub(super) fn read_override(object: &Object) -> Result<Override, PlanError> {
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

/// The namespace a template lands in: none for cluster-scoped kinds, `default` when unset.
pub(super) fn effective_namespace(template: &Object, scopes: &Scopes) -> String {
    scopes.landing_namespace(template).to_string()
}

/// Karmada's choice among matching propagation policies: namespaced over cluster-scoped, then
/// higher `priority`, then the more specific selector, then the lower policy name.
pub(super) fn choose_policy<'a>(
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

/// The most specific match among `selectors` (see [`selector_priority`]).
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

/// The override policies that select a template, in Karmada's order: cluster-wide policies
/// first, then the namespace's; within each, match-all before label selectors before names,
/// then by policy name. Later ones win.
pub(super) fn matching_overrides<'a>(
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
