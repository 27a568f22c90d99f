//! Karmada's dynamic assignment (`pkg/scheduler/core/assignment.go` `assignByDynamicStrategy`,
//! `division_algorithm.go` `dynamicScaleUp`/`dynamicScaleDown`/`dynamicFreshScale`/
//! `dynamicDivideReplicas`, and the `Dispenser` of `pkg/util/helper`): replicas divided over
//! clusters by the replicas each can take, in either [`Assignment`] mode, over overflow tiers.
//!
//! Every loop runs over clusters, never over replicas: a division of 2^31 replicas costs what a
//! division of 3 does.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::MAX_REPLICAS;

/// Which of Karmada's capacity-based strategies divides the replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Division {
    /// `replicaDivisionPreference: Aggregated`: as few clusters as hold the replicas, the
    /// largest first.
    Aggregated,
    /// `weightPreference.dynamicWeight: AvailableReplicas`: every candidate, weighted by what it
    /// can take.
    DynamicWeight,
}

impl fmt::Display for Division {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Division::Aggregated => "Aggregated",
            Division::DynamicWeight => "dynamicWeight AvailableReplicas",
        })
    }
}

/// How a division treats the previous one: Karmada's `assignmentMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Assignment {
    /// Karmada's default: scale down proportionally to the previous division, scale up by
    /// placing only the new replicas, and keep the previous division when the count is the
    /// same (`dynamicScaleDown`, `dynamicScaleUp`).
    #[default]
    Steady,
    /// A complete recalculation, as Karmada does when a rescheduling is asked for
    /// (`dynamicFreshScale`): every replica is divided by each cluster's available replicas
    /// plus what it held before (its own replicas are room it already uses).
    Fresh,
}

/// The clusters cannot take the replicas; Karmada's scheduler reports the binding
/// unschedulable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "failed to {round}: clusters' available replicas {available} are not enough to schedule {needed} (available: {})",
    per_cluster.iter().map(|(c, n)| format!("{c}={n}")).collect::<Vec<_>>().join(" ")
)]
pub struct NotEnoughCapacity {
    /// Karmada's name for the round that failed: `scale up` or `do fresh scale`.
    pub round: &'static str,
    /// What all candidates together can take.
    pub available: u64,
    /// The replicas to place in this round (beyond those already placed).
    pub needed: u64,
    /// Each candidate's available replicas.
    pub per_cluster: Vec<(String, u64)>,
}

/// A cluster's share as the dispenser sees it: weight, and its previous replicas (ties go to
/// the larger, to keep the last round's remainders where they were).
pub(super) struct Weighted<'a> {
    pub(super) name: &'a str,
    pub(super) weight: u64,
    pub(super) last: u64,
}

/// Karmada's `Dispenser.TakeByWeight`: each cluster gets `floor(weight * replicas / sum)`, and
/// the remainder goes one each to the clusters in order of weight (largest first), then of
/// previous replicas (largest first). Karmada breaks the last tie at random; a plan must not
/// change between runs, so here the lower name wins. The result is merged into `init`.
pub(super) fn take_by_weight(
    replicas: u64,
    mut weights: Vec<Weighted>,
    init: &mut BTreeMap<String, u64>,
) {
    let sum: u128 = weights.iter().map(|w| w.weight as u128).sum();
    if replicas == 0 || sum == 0 {
        return;
    }
    weights.sort_by(|a, b| {
        (b.weight, b.last)
            .cmp(&(a.weight, a.last))
            .then_with(|| a.name.cmp(b.name))
    });
    let shares: Vec<u64> = weights
        .iter()
        .map(|w| (w.weight as u128 * replicas as u128 / sum) as u64)
        .collect();
    // The floors lose less than one replica per cluster, so the remainder is < the count.
    let remainder = replicas - shares.iter().sum::<u64>();
    for (index, (w, share)) in weights.iter().zip(shares).enumerate() {
        let extra = u64::from((index as u64) < remainder);
        *init.entry(w.name.to_string()).or_insert(0) += share + extra;
    }
}

/// Divides `replicas` over the candidates by their available replicas, as Karmada's
/// `assignByDynamicStrategy` in `Steady` mode:
///
/// - `previous` is the last division (cluster, replicas); entries for clusters that are no
///   longer candidates are dropped (their replicas count as new ones).
/// - Scale down (the previous replicas exceed `replicas`): the previous division is the
///   weight list, and capacity is not asked; with Aggregated, only the largest previous
///   clusters that hold `replicas` keep any.
/// - Scale up, or a first division (empty `previous`): only the new replicas are divided, by
///   available replicas; previous replicas stay where they are. When the candidates cannot
///   take them all, nothing is divided ([`NotEnoughCapacity`]). With Aggregated the previous
///   clusters are filled first, then the others by available replicas, largest first, as
///   many as hold the new replicas.
/// - The same count: the previous division stands.
///
/// `available` is each candidate's available replicas, e.g. by [`available_replicas`]. The
/// result is sorted by cluster name and has no zero shares. This is [`Assignment::Steady`];
/// [`divide_fresh`] is the other mode.
pub fn divide(
    division: Division,
    replicas: u64,
    available: &[(&str, u64)],
    previous: &[(&str, u64)],
) -> Result<Vec<(String, u64)>, NotEnoughCapacity> {
    let candidates: BTreeSet<&str> = available.iter().map(|(name, _)| *name).collect();
    // `buildScheduledClusters`: the previous division, on clusters still candidates.
    let scheduled: Vec<(&str, u64)> = previous
        .iter()
        .filter(|(name, _)| candidates.contains(name))
        .copied()
        .collect();
    let assigned: u64 = scheduled.iter().map(|(_, n)| n).sum();
    let mut result: BTreeMap<String, u64> = BTreeMap::new();
    if assigned > replicas {
        // `dynamicScaleDown`: weights are the previous shares; it starts from nothing.
        // (Karmada takes every previous entry here, candidates or not; one that is no longer a
        // candidate must not receive replicas again, so only candidates' entries count.)
        let weights = sorted_by_count(&scheduled);
        spread(division, "scale down", replicas, weights, &[], &mut result)?;
    } else if assigned < replicas {
        // `dynamicScaleUp`: only the new replicas, by available replicas; old ones stay.
        for (name, n) in &scheduled {
            *result.entry(name.to_string()).or_insert(0) += n;
        }
        let weights = sorted_by_count(available);
        spread(
            division,
            "scale up",
            replicas - assigned,
            weights,
            &scheduled,
            &mut result,
        )?;
    } else {
        for (name, n) in &scheduled {
            *result.entry(name.to_string()).or_insert(0) += n;
        }
    }
    Ok(result.into_iter().filter(|(_, n)| *n > 0).collect())
}

/// Divides all `replicas` anew, as Karmada's `dynamicFreshScale`: each candidate weighs its
/// available replicas plus its previous replicas (entries of clusters no longer candidates are
/// dropped), and the division starts from nothing, as a first schedule. Unlike [`divide`], an
/// unchanged count is divided again, so the result follows the clusters' capacity.
pub fn divide_fresh(
    division: Division,
    replicas: u64,
    available: &[(&str, u64)],
    previous: &[(&str, u64)],
) -> Result<Vec<(String, u64)>, NotEnoughCapacity> {
    let mut held: BTreeMap<&str, u64> = BTreeMap::new();
    for (name, n) in previous {
        *held.entry(name).or_insert(0) += n;
    }
    let room: Vec<(&str, u64)> = available
        .iter()
        .map(|&(name, n)| {
            let total = n.saturating_add(held.get(name).copied().unwrap_or(0));
            (name, total.min(MAX_REPLICAS))
        })
        .collect();
    let mut result = BTreeMap::new();
    spread(
        division,
        "do fresh scale",
        replicas,
        sorted_by_count(&room),
        &[],
        &mut result,
    )?;
    Ok(result.into_iter().filter(|(_, n)| *n > 0).collect())
}

/// [`divide`] or [`divide_fresh`] over Karmada's overflow tiers (`clusterAffinities[]
/// .overflowAffinities`, v1.18): `tiers` holds each tier's candidates with their available
/// replicas, the term's own clusters first, and no cluster in two tiers. Replicas fill the
/// tiers in order, each taking what it can hold before the next gets any, and leave them in
/// reverse: in `Steady` mode a scale up keeps every previous replica and puts the new ones in
/// the first tier with room; a scale down empties the last tiers first. Within a tier the
/// division is the usual one. With one tier this is exactly [`divide`] / [`divide_fresh`].
pub fn divide_in_tiers(
    division: Division,
    assignment: Assignment,
    replicas: u64,
    tiers: &[Vec<(&str, u64)>],
    previous: &[(&str, u64)],
) -> Result<Vec<(String, u64)>, NotEnoughCapacity> {
    let one_tier = |available: &[(&str, u64)], count| match assignment {
        Assignment::Steady => divide(division, count, available, previous),
        Assignment::Fresh => divide_fresh(division, count, available, previous),
    };
    if let [only] = tiers {
        return one_tier(only, replicas);
    }
    let last: BTreeMap<&str, u64> = previous.iter().copied().collect();
    let held: Vec<u64> = tiers
        .iter()
        .map(|tier| {
            tier.iter()
                .map(|(c, _)| last.get(c).copied().unwrap_or(0))
                .sum()
        })
        .collect();
    let room: Vec<u64> = tiers
        .iter()
        .zip(&held)
        .map(|(tier, held)| {
            let free: u64 = tier.iter().map(|(_, n)| n).sum();
            match assignment {
                Assignment::Steady => free,
                Assignment::Fresh => free.saturating_add(*held),
            }
        })
        .collect();
    // Each tier's count: what it keeps (Steady) and what it takes, first tier first.
    let assigned: u64 = held.iter().sum();
    let (mut counts, round, needed) = match assignment {
        Assignment::Fresh => (vec![0; tiers.len()], "do fresh scale", replicas),
        Assignment::Steady if assigned > replicas => {
            let mut counts = held.clone();
            let mut surplus = assigned - replicas;
            for count in counts.iter_mut().rev() {
                let cut = surplus.min(*count);
                *count -= cut;
                surplus -= cut;
            }
            (counts, "scale down", 0)
        }
        Assignment::Steady => (held.clone(), "scale up", replicas - assigned),
    };
    let mut missing = needed;
    for (count, room) in counts.iter_mut().zip(&room) {
        let take = missing.min(*room);
        *count += take;
        missing -= take;
    }
    if missing > 0 {
        let mut per_cluster: Vec<(String, u64)> = tiers
            .iter()
            .flatten()
            .map(|(c, n)| (c.to_string(), *n))
            .collect();
        per_cluster.sort();
        return Err(NotEnoughCapacity {
            round,
            available: room.iter().sum(),
            needed,
            per_cluster,
        });
    }
    let mut result = Vec::new();
    for (tier, count) in tiers.iter().zip(counts) {
        if count > 0 {
            result.extend(one_tier(tier, count)?);
        }
    }
    result.sort();
    Ok(result)
}

/// `TargetClustersList` order: largest count first. Go's `sort.Sort` leaves ties in no defined
/// order; here the lower name comes first, so a plan is stable.
fn sorted_by_count<'a>(list: &[(&'a str, u64)]) -> Vec<(&'a str, u64)> {
    let mut sorted = list.to_vec();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    sorted
}

/// `dynamicDivideReplicas`: checks capacity, cuts the Aggregated prefix, then dispenses
/// `target` by the weights into `result` (which holds the previous shares).
fn spread(
    division: Division,
    round: &'static str,
    target: u64,
    mut weights: Vec<(&str, u64)>,
    scheduled: &[(&str, u64)],
    result: &mut BTreeMap<String, u64>,
) -> Result<(), NotEnoughCapacity> {
    let total: u64 = weights.iter().map(|(_, n)| n).sum();
    if total < target {
        let mut per_cluster: Vec<(String, u64)> =
            weights.iter().map(|(c, n)| (c.to_string(), *n)).collect();
        per_cluster.sort();
        return Err(NotEnoughCapacity {
            round,
            available: total,
            needed: target,
            per_cluster,
        });
    }
    if division == Division::Aggregated {
        // `resortAvailableClusters`: clusters holding previous replicas first, each part in
        // its order; then as few clusters, from the front, as hold the target.
        let prior: BTreeSet<&str> = scheduled
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(c, _)| *c)
            .collect();
        let (mut front, back): (Vec<_>, Vec<_>) =
            weights.into_iter().partition(|(c, _)| prior.contains(c));
        front.extend(back);
        let mut sum = 0u64;
        let keep = front
            .iter()
            .position(|(_, n)| {
                sum += n;
                sum >= target
            })
            .map_or(front.len(), |i| i + 1);
        front.truncate(keep);
        weights = front;
    }
    let last: BTreeMap<&str, u64> = scheduled.iter().copied().collect();
    let weighted = weights
        .iter()
        .map(|&(name, weight)| Weighted {
            name,
            weight,
            last: last.get(name).copied().unwrap_or(0),
        })
        .collect();
    take_by_weight(target, weighted, result);
    Ok(())
}
