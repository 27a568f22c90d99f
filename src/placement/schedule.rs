//! Karmada's scheduling rules on plain data: which clusters a placement selects, and how
//! replicas are divided among them.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};

use serde::Serialize;

use super::types::{ClusterAffinity, Placement, SpreadConstraint, Taint, Toleration};
use crate::labels::{Operator, Requirement};

/// A member cluster as placement sees it: the Fleet entry merged with its AttachedCluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Cluster {
    /// Name (kubeconfig context, AttachedCluster name).
    pub name: String,
    /// Labels (the Fleet's, then the AttachedCluster's).
    pub labels: BTreeMap<String, String>,
    /// Cloud provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Region.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Zones.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
    /// Taints.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<Taint>,
    /// Where the hub keeps its kubeconfig, from the AttachedCluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubeconfig_secret: Option<super::types::SecretKeyRef>,
}

impl Cluster {
    /// A cluster with a name and labels (for tests and examples).
    pub fn new(name: &str) -> Self {
        Cluster {
            name: name.to_string(),
            ..Default::default()
        }
    }
}

/// Whether the affinity selects the cluster: names, labels, fields, minus exclusions.
pub fn affinity_matches(affinity: &ClusterAffinity, cluster: &Cluster) -> bool {
    let by_name =
        affinity.cluster_names.is_empty() || affinity.cluster_names.contains(&cluster.name);
    let by_labels = affinity
        .label_selector
        .as_ref()
        .is_none_or(|s| s.matches(&cluster.labels));
    let by_fields = affinity.field_selector.as_ref().is_none_or(|s| {
        s.match_expressions
            .iter()
            .all(|r| field_requirement_matches(r, cluster))
    });
    by_name && by_labels && by_fields && !affinity.exclude.contains(&cluster.name)
}

/// `provider` and `region` compare one value; `zone` matches on any overlap with `zones`.
fn field_requirement_matches(requirement: &Requirement, cluster: &Cluster) -> bool {
    let values: Vec<&str> = match requirement.key.as_str() {
        "provider" => cluster.provider.iter().map(String::as_str).collect(),
        "region" => cluster.region.iter().map(String::as_str).collect(),
        "zone" | "zones" => cluster.zones.iter().map(String::as_str).collect(),
        _ => Vec::new(),
    };
    let any_in = values
        .iter()
        .any(|v| requirement.values.iter().any(|w| w == v));
    match requirement.operator {
        Operator::In => any_in,
        Operator::NotIn => !any_in,
        Operator::Exists => !values.is_empty(),
        Operator::DoesNotExist => values.is_empty(),
    }
}

/// Whether the tolerations admit every `NoSchedule` / `NoExecute` taint of the cluster.
pub fn tolerates(tolerations: &[Toleration], cluster: &Cluster) -> bool {
    cluster
        .taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|taint| tolerations.iter().any(|t| toleration_matches(t, taint)))
}

/// Kubernetes' `ToleratesTaint`.
fn toleration_matches(toleration: &Toleration, taint: &Taint) -> bool {
    if !toleration.effect.is_empty() && toleration.effect != taint.effect {
        return false;
    }
    let exists = toleration.operator.as_deref() == Some("Exists");
    if toleration.key.is_empty() {
        return exists;
    }
    toleration.key == taint.key && (exists || toleration.value == taint.value)
}

/// Why a placement selects no cluster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Infeasible(pub String);

/// The clusters a placement selects, by name order. `static_weights` turns spread constraints
/// off, as in Karmada. With `clusterAffinities`, the first group with a feasible result wins.
pub fn select_clusters<'a>(
    placement: &Placement,
    clusters: &'a [Cluster],
    static_weights: bool,
) -> Result<(Vec<&'a Cluster>, Option<String>), Infeasible> {
    let groups: Vec<(Option<String>, ClusterAffinity)> = if placement.cluster_affinities.is_empty()
    {
        vec![(None, placement.cluster_affinity.clone().unwrap_or_default())]
    } else {
        placement
            .cluster_affinities
            .iter()
            .map(|t| (Some(t.affinity_name.clone()), t.affinity()))
            .collect()
    };
    let mut last_problem = Infeasible("no cluster group".into());
    for (name, affinity) in groups {
        let mut candidates: Vec<&Cluster> = clusters
            .iter()
            .filter(|c| affinity_matches(&affinity, c))
            .filter(|c| tolerates(&placement.cluster_tolerations, c))
            .collect();
        candidates.sort_by(|a, b| a.name.cmp(&b.name));
        if candidates.is_empty() && overflow_selects(placement, name.as_deref(), clusters) {
            // Karmada's filter passes a cluster any tier of the term selects: the term stands
            // with no cluster of its own, and its overflow tiers take the replicas.
            return Ok((candidates, name));
        }
        if candidates.is_empty() {
            last_problem = Infeasible(match &name {
                Some(n) => format!("cluster affinity group {n:?} selects no cluster"),
                None => {
                    "cluster affinity selects no cluster (or every match has an untolerated taint)"
                        .into()
                }
            });
            continue;
        }
        let spread = if static_weights {
            Ok(candidates)
        } else {
            apply_spread_constraints(&placement.spread_constraints, candidates)
        };
        match spread {
            Ok(selected) => return Ok((selected, name)),
            Err(problem) => last_problem = problem,
        }
    }
    Err(last_problem)
}

/// Whether the named `clusterAffinities` term has an overflow tier that selects a cluster the
/// policy tolerates; only with capacity-based division, the only one Karmada allows them with.
fn overflow_selects(placement: &Placement, group: Option<&str>, clusters: &[Cluster]) -> bool {
    placement.divides_by_capacity()
        && placement
            .cluster_affinities
            .iter()
            .filter(|term| Some(term.affinity_name.as_str()) == group)
            .flat_map(|term| &term.overflow_affinities)
            .any(|tier| {
                let affinity = tier.affinity();
                clusters.iter().any(|c| {
                    affinity_matches(&affinity, c) && tolerates(&placement.cluster_tolerations, c)
                })
            })
}

/// The value a cluster has for a spread constraint's field or label.
fn group_of(constraint: &SpreadConstraint, cluster: &Cluster) -> Option<String> {
    if let Some(label) = &constraint.spread_by_label {
        return cluster.labels.get(label).cloned();
    }
    match constraint.spread_by_field.as_deref() {
        Some("region") => cluster.region.clone(),
        Some("provider") => cluster.provider.clone(),
        Some("zone") => cluster.zones.first().cloned(),
        _ => Some(cluster.name.clone()),
    }
}

/// Applies `spreadConstraints` to name-ordered candidates: too few groups is infeasible;
/// beyond `maxGroups`, groups (and then clusters) are cut in name order, keeping one cluster
/// of every kept group before filling up.
pub fn apply_spread_constraints<'a>(
    constraints: &[SpreadConstraint],
    mut candidates: Vec<&'a Cluster>,
) -> Result<Vec<&'a Cluster>, Infeasible> {
    let is_cluster = |c: &SpreadConstraint| {
        c.spread_by_label.is_none() && c.spread_by_field.as_deref().is_none_or(|f| f == "cluster")
    };
    // Group constraints (region, zone, provider, label) first: they decide which groups stay.
    for constraint in constraints.iter().filter(|c| !is_cluster(c)) {
        let by = constraint
            .spread_by_label
            .clone()
            .or_else(|| constraint.spread_by_field.clone())
            .unwrap_or_default();
        candidates.retain(|c| group_of(constraint, c).is_some());
        let mut groups: Vec<String> = Vec::new();
        for cluster in &candidates {
            let group = group_of(constraint, cluster).unwrap_or_default();
            if !groups.contains(&group) {
                groups.push(group);
            }
        }
        if let Some(min) = constraint.min_groups
            && groups.len() < min as usize
        {
            return Err(Infeasible(format!(
                "spread by {by}: {} group(s) available, minGroups is {min}",
                groups.len()
            )));
        }
        if let Some(max) = constraint.max_groups {
            groups.truncate(max as usize);
        }
        candidates.retain(|c| group_of(constraint, c).is_some_and(|g| groups.contains(&g)));
    }
    for constraint in constraints.iter().filter(|c| is_cluster(c)) {
        if let Some(min) = constraint.min_groups
            && candidates.len() < min as usize
        {
            return Err(Infeasible(format!(
                "spread by cluster: {} cluster(s) available, minGroups is {min}",
                candidates.len()
            )));
        }
        if let Some(max) = constraint.max_groups.map(|m| m as usize)
            && candidates.len() > max
        {
            candidates = cut_keeping_groups(candidates, constraints, max);
        }
    }
    Ok(candidates)
}

/// Keeps `max` clusters: first one of each group of the group constraints, then by name.
fn cut_keeping_groups<'a>(
    candidates: Vec<&'a Cluster>,
    constraints: &[SpreadConstraint],
    max: usize,
) -> Vec<&'a Cluster> {
    let group_constraints: Vec<&SpreadConstraint> = constraints
        .iter()
        .filter(|c| {
            c.spread_by_label.is_some()
                || c.spread_by_field.as_deref().is_some_and(|f| f != "cluster")
        })
        .collect();
    let mut chosen: Vec<&Cluster> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for cluster in &candidates {
        let key: Vec<Option<String>> = group_constraints
            .iter()
            .map(|c| group_of(c, cluster))
            .collect();
        if !group_constraints.is_empty() && seen.insert(key) && chosen.len() < max {
            chosen.push(cluster);
        }
    }
    for cluster in &candidates {
        if chosen.len() >= max {
            break;
        }
        if !chosen.iter().any(|c| c.name == cluster.name) {
            chosen.push(cluster);
        }
    }
    chosen.sort_by(|a, b| a.name.cmp(&b.name));
    chosen
}

/// Divides `total` replicas by the Webster (Sainte-Laguë) method: seat by seat, the next
/// replica goes to the highest `weight / (2 * assigned + 1)`; ties go to the cluster with fewer
/// replicas, then to the lower name. Clusters of weight 0 get nothing.
///
/// ```
/// use flotilla::placement::divide_by_weight;
/// assert_eq!(divide_by_weight(10, &[("a", 60), ("b", 40)]), [6, 4]);
/// assert_eq!(divide_by_weight(14, &[("a", 3), ("b", 2), ("c", 1)]), [7, 5, 2]);
/// ```
pub fn divide_by_weight(total: u64, weights: &[(&str, u64)]) -> Vec<u64> {
    // Seat by seat for small totals; by the threshold for large ones, in O(clusters) per
    // step, so 2^31 replicas take no longer than 10 (the two agree: see the tests).
    if total <= SEAT_BY_SEAT_LIMIT {
        divide_seat_by_seat(total, weights)
    } else {
        divide_by_threshold(total, weights)
    }
}

/// Up to this many replicas are handed out one by one.
const SEAT_BY_SEAT_LIMIT: u64 = 10_000;

/// The highest-averages procedure itself: each replica to the highest quotient.
fn divide_seat_by_seat(total: u64, weights: &[(&str, u64)]) -> Vec<u64> {
    #[derive(PartialEq)]
    struct Seat<'a> {
        quotient: f64,
        assigned: u64,
        name: &'a str,
        index: usize,
    }
    impl Eq for Seat<'_> {}
    impl Ord for Seat<'_> {
        fn cmp(&self, other: &Self) -> Ordering {
            self.quotient
                .total_cmp(&other.quotient)
                .then_with(|| other.assigned.cmp(&self.assigned))
                .then_with(|| other.name.cmp(self.name))
        }
    }
    impl PartialOrd for Seat<'_> {
        fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
            Some(self.cmp(other))
        }
    }
    let mut shares = vec![0u64; weights.len()];
    let mut heap: BinaryHeap<Seat> = weights
        .iter()
        .enumerate()
        .filter(|(_, (_, w))| *w > 0)
        .map(|(index, (name, w))| Seat {
            quotient: *w as f64,
            assigned: 0,
            name,
            index,
        })
        .collect();
    for _ in 0..total {
        let Some(mut seat) = heap.pop() else { break };
        shares[seat.index] += 1;
        seat.assigned += 1;
        seat.quotient = weights[seat.index].1 as f64 / (2 * seat.assigned + 1) as f64;
        heap.push(seat);
    }
    shares
}

/// The same result without handing seats out one by one. Cluster i's `s`-th quotient is
/// `w_i / (2s + 1)`; the replicas go to the `total` largest quotients. Every quotient above
/// the `total`-th largest (the threshold) wins a seat; the seats left go to the quotients
/// equal to it, in the procedure's tie order (fewer assigned, then the lower name). Quotients
/// are compared as fractions in `u128`, exactly.
fn divide_by_threshold(total: u64, weights: &[(&str, u64)]) -> Vec<u64> {
    let positive: Vec<usize> = (0..weights.len()).filter(|&i| weights[i].1 > 0).collect();
    let mut shares = vec![0u64; weights.len()];
    if positive.is_empty() {
        return shares;
    }
    // Quotients of cluster i strictly above w/k (k odd): the odd numbers k' with
    // w_i * k > w * k', i.e. k' <= (w_i * k - 1) / w.
    let above = |i: usize, w: u128, k: u128| -> u128 {
        let largest = (weights[i].1 as u128 * k).saturating_sub(1) / w;
        largest.div_ceil(2)
    };
    let count_above = |w: u128, k: u128| -> u128 { positive.iter().map(|&i| above(i, w, k)).sum() };
    // The threshold is the `total`-th largest quotient: fewer than `total` quotients are above
    // it. For each cluster, binary search the smallest of its quotients with that property.
    let total = total as u128;
    let mut threshold: Option<(u128, u128)> = None;
    for &i in &positive {
        let w = weights[i].1 as u128;
        // Quotients >= w/(2s+1) number count_above(w, 2s+1) + (those equal); find the
        // largest s whose quotient still has fewer than `total` quotients strictly above.
        let (mut low, mut high) = (0u128, total);
        while low < high {
            let middle = low + (high - low).div_ceil(2);
            if count_above(w, 2 * middle + 1) < total {
                low = middle;
            } else {
                high = middle - 1;
            }
        }
        let candidate = (w, 2 * low + 1);
        if count_above(candidate.0, candidate.1) >= total {
            continue;
        }
        // Every cluster's candidate is at least the threshold, and the threshold's own
        // cluster's candidate is the threshold: it is the smallest candidate.
        threshold = match threshold {
            Some((tw, tk)) if tw * candidate.1 <= candidate.0 * tk => Some((tw, tk)),
            _ => Some(candidate),
        };
    }
    let Some((tw, tk)) = threshold else {
        return shares;
    };
    let mut left = total;
    let mut tied = Vec::new();
    for &i in &positive {
        let seats = above(i, tw, tk);
        shares[i] = seats as u64;
        left -= seats.min(left);
        // Is the cluster's next quotient, w_i/(2*seats+1), equal to the threshold?
        if weights[i].1 as u128 * tk == tw * (2 * seats + 1) {
            tied.push(i);
        }
    }
    // Ties: fewer assigned first, then the lower name (the procedure's order).
    tied.sort_by(|&a, &b| {
        shares[a]
            .cmp(&shares[b])
            .then_with(|| weights[a].0.cmp(weights[b].0))
    });
    for i in tied.into_iter().take(left as usize) {
        shares[i] += 1;
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::LabelSelector;
    use crate::placement::types::FieldSelector;

    fn cluster(name: &str, region: &str, zones: &[&str], labels: &[(&str, &str)]) -> Cluster {
        Cluster {
            name: name.into(),
            region: Some(region.into()),
            provider: Some("aws".into()),
            zones: zones.iter().map(|z| z.to_string()).collect(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    fn names(clusters: &[&Cluster]) -> Vec<String> {
        clusters.iter().map(|c| c.name.clone()).collect()
    }

    #[test]
    fn webster_divides_the_design_examples() {
        assert_eq!(divide_by_weight(10, &[("a", 60), ("b", 40)]), [6, 4]);
        assert_eq!(
            divide_by_weight(14, &[("a", 3), ("b", 2), ("c", 1)]),
            [7, 5, 2]
        );
        assert_eq!(
            divide_by_weight(10, &[("spot", 80), ("ondemand", 20)]),
            [8, 2]
        );
        assert_eq!(divide_by_weight(10, &[("a", 70), ("b", 30)]), [7, 3]);
    }

    #[test]
    fn webster_ties_go_to_fewer_replicas_then_lower_name() {
        // Equal weights, odd total: the tie on the last seat goes to the lower name.
        assert_eq!(divide_by_weight(3, &[("b", 1), ("a", 1)]), [1, 2]);
        // 1 replica at 1:1 goes to "a".
        assert_eq!(divide_by_weight(1, &[("a", 1), ("b", 1)]), [1, 0]);
        // Zero weight never receives a replica.
        assert_eq!(divide_by_weight(5, &[("a", 0), ("b", 1)]), [0, 5]);
        // A weight far below the others rounds to zero.
        assert_eq!(divide_by_weight(2, &[("a", 100), ("b", 1)]), [2, 0]);
    }

    #[test]
    fn affinity_ands_names_labels_fields_and_exclude() {
        let eu = cluster(
            "eu",
            "eu-central-1",
            &["eu-1a", "eu-1b"],
            &[("env", "prod")],
        );
        let us = cluster("us", "us-east-1", &["us-1a"], &[("env", "dev")]);
        let affinity = ClusterAffinity {
            label_selector: Some(LabelSelector {
                match_labels: [("env".to_string(), "prod".to_string())].into(),
                ..Default::default()
            }),
            field_selector: Some(FieldSelector {
                match_expressions: vec![Requirement {
                    key: "zone".into(),
                    operator: Operator::In,
                    values: vec!["eu-1b".into()],
                }],
            }),
            ..Default::default()
        };
        assert!(
            affinity_matches(&affinity, &eu),
            "zone matches on any overlap"
        );
        assert!(!affinity_matches(&affinity, &us));
        let excluded = ClusterAffinity {
            exclude: vec!["eu".into()],
            ..affinity
        };
        assert!(!affinity_matches(&excluded, &eu));
        let not_in = ClusterAffinity {
            field_selector: Some(FieldSelector {
                match_expressions: vec![Requirement {
                    key: "region".into(),
                    operator: Operator::NotIn,
                    values: vec!["eu-central-1".into()],
                }],
            }),
            ..Default::default()
        };
        assert!(!affinity_matches(&not_in, &eu));
        assert!(affinity_matches(&not_in, &us));
    }

    #[test]
    fn untolerated_taints_remove_candidates() {
        let mut spot = cluster("spot", "r", &[], &[]);
        spot.taints = vec![Taint {
            key: "spot".into(),
            value: "true".into(),
            effect: "NoSchedule".into(),
        }];
        assert!(!tolerates(&[], &spot));
        let equal = Toleration {
            key: "spot".into(),
            value: "true".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        assert!(tolerates(std::slice::from_ref(&equal), &spot));
        let wrong_value = Toleration {
            value: "false".into(),
            ..equal.clone()
        };
        assert!(!tolerates(&[wrong_value], &spot));
        let exists_any = Toleration {
            operator: Some("Exists".into()),
            ..Default::default()
        };
        assert!(
            tolerates(&[exists_any], &spot),
            "empty key with Exists tolerates all"
        );
        let wrong_effect = Toleration {
            effect: "NoExecute".into(),
            ..equal
        };
        assert!(!tolerates(&[wrong_effect], &spot));
        // PreferNoSchedule never excludes a cluster.
        spot.taints[0].effect = "PreferNoSchedule".into();
        assert!(tolerates(&[], &spot));
    }

    #[test]
    fn spread_constraints_cut_in_name_order_and_refuse_too_few_groups() {
        let clusters = [
            cluster("a", "r1", &[], &[]),
            cluster("b", "r1", &[], &[]),
            cluster("c", "r2", &[], &[]),
            cluster("d", "r3", &[], &[]),
        ];
        let all: Vec<&Cluster> = clusters.iter().collect();
        let by_cluster = SpreadConstraint {
            spread_by_field: Some("cluster".into()),
            max_groups: Some(2),
            min_groups: Some(1),
            ..Default::default()
        };
        let cut = apply_spread_constraints(std::slice::from_ref(&by_cluster), all.clone()).unwrap();
        assert_eq!(names(&cut), ["a", "b"]);
        let by_region = SpreadConstraint {
            spread_by_field: Some("region".into()),
            max_groups: Some(2),
            min_groups: Some(2),
            ..Default::default()
        };
        // Two regions kept (r1, r2), then one cluster of each before filling by name.
        let cut = apply_spread_constraints(&[by_region.clone(), by_cluster], all.clone()).unwrap();
        assert_eq!(names(&cut), ["a", "c"]);
        let too_many = SpreadConstraint {
            min_groups: Some(4),
            ..by_region
        };
        let error = apply_spread_constraints(&[too_many], all).unwrap_err();
        assert!(error.0.contains("minGroups is 4"), "{}", error.0);
    }

    #[test]
    fn cluster_affinities_fall_back_to_the_first_feasible_group() {
        let clusters = [cluster("a", "r1", &[], &[]), cluster("b", "r2", &[], &[])];
        let placement: Placement = serde_json::from_value(serde_json::json!({
            "clusterAffinities": [
                {"affinityName": "primary", "clusterNames": ["missing"]},
                {"affinityName": "backup", "clusterNames": ["b"]}
            ]
        }))
        .unwrap();
        let (selected, group) = select_clusters(&placement, &clusters, false).unwrap();
        assert_eq!(names(&selected), ["b"]);
        assert_eq!(group.as_deref(), Some("backup"));
    }

    #[test]
    fn division_by_threshold_equals_seat_by_seat() {
        // A small deterministic generator: many shapes, ties included (equal weights, weights
        // with common factors).
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |bound: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % bound
        };
        let names = ["a", "b", "c", "d", "e", "f", "g"];
        for _ in 0..3_000 {
            let clusters = 1 + next(6) as usize;
            let weights: Vec<(&str, u64)> = (0..clusters)
                .map(|i| {
                    (
                        names[i],
                        [0, 1, 2, 3, 5, 6, 10, 60, 40, 7][next(10) as usize],
                    )
                })
                .collect();
            let total = next(60);
            assert_eq!(
                divide_by_threshold(total, &weights),
                divide_seat_by_seat(total, &weights),
                "{total} over {weights:?}"
            );
        }
    }

    #[test]
    fn huge_replica_counts_divide_at_once() {
        let shares = divide_by_weight(2_147_483_647, &[("a", 60), ("b", 30), ("c", 10)]);
        assert_eq!(shares.iter().sum::<u64>(), 2_147_483_647);
        assert_eq!(shares, [1_288_490_188, 644_245_094, 214_748_365]);
    }
}
