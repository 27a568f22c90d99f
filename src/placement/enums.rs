//! The enumerated values of Karmada's and Kurator's policy fields, checked as their CRD
//! validation checks them: a value outside the list is refused with the field and the
//! allowed values, never read as a default (`divided` is not Duplicated, `regoin` does not
//! spread by cluster).
//!
//! One table per kind of object: a field path (`[]` enters every element of a list) and the
//! values the CRD's `enum` (or, for Kubernetes' own types, the apiserver's validation) allows.
//! The check runs on the raw `spec` before it is read into types, so every later comparison
//! of these strings sees only allowed values.

use serde_json::Value;

/// Operators of a Kubernetes label selector's `matchExpressions`.
const LABEL_OPERATORS: &[&str] = &["In", "NotIn", "Exists", "DoesNotExist"];
/// Karmada's cluster `fieldSelector`: keys and operators its webhook accepts.
const FIELD_KEYS: &[&str] = &["provider", "region", "zone"];
const FIELD_OPERATORS: &[&str] = &["In", "NotIn"];
/// Taint effects (Kubernetes' core validation).
const TAINT_EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];
/// A toleration's effect: empty tolerates every effect.
const TOLERATION_EFFECTS: &[&str] = &["", "NoSchedule", "PreferNoSchedule", "NoExecute"];
/// A toleration's operator: empty means `Equal`.
const TOLERATION_OPERATORS: &[&str] = &["", "Exists", "Equal"];

/// The places a `ClusterAffinity` appears in a PropagationPolicy spec.
const AFFINITIES: &[&str] = &[
    "placement.clusterAffinity",
    "placement.clusterAffinities[]",
    "placement.clusterAffinities[].overflowAffinities[]",
    "placement.replicaScheduling.weightPreference.staticWeightList[].targetCluster",
];

/// `(path, allowed)` of a PropagationPolicy's (and ClusterPropagationPolicy's) spec.
fn propagation_enums() -> Vec<(String, &'static [&'static str])> {
    let mut table: Vec<(String, &'static [&'static str])> = vec![
        (
            "placement.replicaScheduling.replicaSchedulingType".into(),
            &["Duplicated", "Divided"],
        ),
        (
            "placement.replicaScheduling.replicaDivisionPreference".into(),
            &["Aggregated", "Weighted"],
        ),
        (
            "placement.replicaScheduling.weightPreference.dynamicWeight".into(),
            &["AvailableReplicas"],
        ),
        (
            "placement.spreadConstraints[].spreadByField".into(),
            &["cluster", "region", "zone", "provider"],
        ),
        (
            "placement.clusterTolerations[].operator".into(),
            TOLERATION_OPERATORS,
        ),
        (
            "placement.clusterTolerations[].effect".into(),
            TOLERATION_EFFECTS,
        ),
        ("conflictResolution".into(), &["Abort", "Overwrite"]),
        ("activationPreference".into(), &["Lazy"]),
        ("preemption".into(), &["Always", "Never"]),
        (
            "schedulePriority.priorityClassSource".into(),
            &["KubePriorityClass"],
        ),
        // v1.15-v1.18 accept the deprecated Immediately and Graciously too.
        (
            "failover.application.purgeMode".into(),
            &[
                "Directly",
                "Gracefully",
                "Never",
                "Immediately",
                "Graciously",
            ],
        ),
        (
            "failover.cluster.purgeMode".into(),
            &["Directly", "Gracefully"],
        ),
    ];
    for affinity in AFFINITIES {
        table.extend(affinity_enums(affinity));
    }
    table.push((
        "resourceSelectors[].labelSelector.matchExpressions[].operator".into(),
        LABEL_OPERATORS,
    ));
    table
}

/// `(path, allowed)` of an OverridePolicy's (and ClusterOverridePolicy's) spec.
fn override_enums() -> Vec<(String, &'static [&'static str])> {
    let mut table: Vec<(String, &'static [&'static str])> = vec![(
        "resourceSelectors[].labelSelector.matchExpressions[].operator".into(),
        LABEL_OPERATORS,
    )];
    for (affinity, overriders) in [
        (
            "overrideRules[].targetCluster",
            "overrideRules[].overriders",
        ),
        ("targetCluster", "overriders"),
    ] {
        table.extend(affinity_enums(affinity));
        let add_remove_replace: &'static [&'static str] = &["add", "remove", "replace"];
        for (list, field, allowed) in [
            ("plaintext", "operator", add_remove_replace),
            ("imageOverrider", "operator", add_remove_replace),
            (
                "imageOverrider",
                "component",
                &["Registry", "Repository", "Tag"][..],
            ),
            ("commandOverrider", "operator", &["add", "remove"][..]),
            ("argsOverrider", "operator", &["add", "remove"][..]),
            ("labelsOverrider", "operator", add_remove_replace),
            ("annotationsOverrider", "operator", add_remove_replace),
            ("fieldOverrider[].json", "operator", add_remove_replace),
            ("fieldOverrider[].yaml", "operator", add_remove_replace),
        ] {
            table.push((format!("{overriders}.{list}[].{field}"), allowed));
        }
    }
    table
}

/// `(path, allowed)` of a Kurator Fleet's spec.
fn fleet_enums() -> Vec<(String, &'static [&'static str])> {
    vec![("clusters[].taints[].effect".into(), TAINT_EFFECTS)]
}

fn affinity_enums(affinity: &str) -> Vec<(String, &'static [&'static str])> {
    vec![
        (
            format!("{affinity}.labelSelector.matchExpressions[].operator"),
            LABEL_OPERATORS,
        ),
        (
            format!("{affinity}.fieldSelector.matchExpressions[].key"),
            FIELD_KEYS,
        ),
        (
            format!("{affinity}.fieldSelector.matchExpressions[].operator"),
            FIELD_OPERATORS,
        ),
    ]
}

/// A value outside its field's allowed list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnumError {
    /// The field, from `spec`, with list indexes (`spec.placement.spreadConstraints[1].spreadByField`).
    pub field: String,
    /// What is wrong and what is allowed.
    pub problem: String,
}

/// Checks the enumerated fields of a policy or fleet `spec` of this kind; `Ok` for other kinds.
pub fn check(kind: &str, spec: &Value) -> Result<(), EnumError> {
    let table = match kind {
        "PropagationPolicy" | "ClusterPropagationPolicy" => propagation_enums(),
        "OverridePolicy" | "ClusterOverridePolicy" => override_enums(),
        "Fleet" => fleet_enums(),
        _ => return Ok(()),
    };
    for (path, allowed) in &table {
        let steps: Vec<&str> = path.split('.').collect();
        check_at(spec, &steps, "spec".to_string(), allowed)?;
    }
    Ok(())
}

fn check_at(value: &Value, steps: &[&str], at: String, allowed: &[&str]) -> Result<(), EnumError> {
    let Some((step, rest)) = steps.split_first() else {
        return match value {
            Value::Null => Ok(()),
            Value::String(s) if allowed.contains(&s.as_str()) => Ok(()),
            other => Err(EnumError {
                field: at,
                problem: format!(
                    "{other} is not one of {}",
                    allowed
                        .iter()
                        .map(|a| if a.is_empty() { "\"\"" } else { a })
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
        };
    };
    let (name, every) = match step.strip_suffix("[]") {
        Some(name) => (name, true),
        None => (*step, false),
    };
    let Some(child) = value.get(name) else {
        return Ok(());
    };
    if every {
        // A list of the wrong type is the typed reading's error, not this one's.
        for (index, element) in child.as_array().into_iter().flatten().enumerate() {
            check_at(element, rest, format!("{at}.{name}[{index}]"), allowed)?;
        }
        Ok(())
    } else {
        check_at(child, rest, format!("{at}.{name}"), allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wrong_values_name_the_field_and_the_allowed_values() {
        let cases = [
            (
                "PropagationPolicy",
                json!({"placement": {"replicaScheduling": {"replicaSchedulingType": "divided"}}}),
                "spec.placement.replicaScheduling.replicaSchedulingType",
                "\"divided\" is not one of Duplicated, Divided",
            ),
            (
                "ClusterPropagationPolicy",
                json!({"placement": {"spreadConstraints": [
                    {"spreadByField": "region"}, {"spreadByField": "regoin"}]}}),
                "spec.placement.spreadConstraints[1].spreadByField",
                "\"regoin\" is not one of cluster, region, zone, provider",
            ),
            (
                "Fleet",
                json!({"clusters": [{"name": "a", "taints": [{"key": "k", "effect": "NoSchedul"}]}]}),
                "spec.clusters[0].taints[0].effect",
                "\"NoSchedul\" is not one of NoSchedule, PreferNoSchedule, NoExecute",
            ),
            (
                "OverridePolicy",
                json!({"overrideRules": [{"overriders": {"imageOverrider": [
                    {"component": "registry", "operator": "replace"}]}}]}),
                "spec.overrideRules[0].overriders.imageOverrider[0].component",
                "\"registry\" is not one of Registry, Repository, Tag",
            ),
            (
                "PropagationPolicy",
                json!({"placement": {"clusterAffinity": {"fieldSelector": {"matchExpressions": [
                    {"key": "region", "operator": "in", "values": ["a"]}]}}}}),
                "spec.placement.clusterAffinity.fieldSelector.matchExpressions[0].operator",
                "\"in\" is not one of In, NotIn",
            ),
            (
                "PropagationPolicy",
                json!({"placement": {"clusterTolerations": [{"key": "k", "operator": 1}]}}),
                "spec.placement.clusterTolerations[0].operator",
                "1 is not one of \"\", Exists, Equal",
            ),
        ];
        for (kind, spec, field, problem) in cases {
            let error = check(kind, &spec).unwrap_err();
            assert_eq!(error.field, field);
            assert_eq!(error.problem, problem);
        }
    }

    #[test]
    fn allowed_and_absent_values_pass() {
        let spec = json!({"placement": {
            "clusterTolerations": [{"key": "k", "operator": "Exists"}, {"key": "j", "effect": ""}],
            "replicaScheduling": {"replicaSchedulingType": "Divided",
                "replicaDivisionPreference": "Weighted",
                "weightPreference": {"staticWeightList": [
                    {"targetCluster": {"clusterNames": ["a"]}, "weight": 1}]}},
            "spreadConstraints": [{"spreadByLabel": "tier"}]}});
        assert_eq!(check("PropagationPolicy", &spec), Ok(()));
        assert_eq!(check("Deployment", &json!({"replicas": "x"})), Ok(()));
    }
}
