//! Capacity-based replica division, as Karmada's scheduler does it: `replicaDivisionPreference:
//! Aggregated` and `weightPreference.dynamicWeight: AvailableReplicas`.
//!
//! Pure: the clusters' free resources come in as a [`Capacity`] (an offline file for
//! `flotilla plan --capacity`, later the agent's reading of the members). Three parts, each after
//! one part of Karmada:
//!
//! - [`Quantity`]: Kubernetes resource quantities, exactly (integers of 10^-9, no floats).
//! - [`ReplicaRequirements`] and [`available_replicas`]: Karmada's general estimator
//!   (`pkg/estimator/client/general.go`) over the per-replica requests Karmada derives from the
//!   pod template (`pkg/util/resource.go`, `AddPodTemplateRequest`).
//! - [`divide`]: Karmada's dynamic assignment (`pkg/scheduler/core/assignment.go`
//!   `assignByDynamicStrategy`, `division_algorithm.go` `dynamicScaleUp`/`dynamicScaleDown`/
//!   `dynamicFreshScale`/`dynamicDivideReplicas`, and the `Dispenser` of `pkg/util/helper`),
//!   in either [`Assignment`] mode: `Steady` (replicas already placed stay where they are) or
//!   `Fresh` (everything divided anew, the previous replicas counted as room).
//!
//! Every loop runs over clusters, never over replicas: a division of 2^31 replicas costs what a
//! division of 3 does.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::schedule::Cluster;
use super::{Target, Warning};
use crate::object::Object;

/// Karmada counts replicas in `int32`: no cluster is worth more than this many.
const MAX_REPLICAS: u64 = i32::MAX as u64;

// ----- quantities -----

/// A Kubernetes resource quantity (`500m`, `2`, `128Mi`, `1G`, `1e3`), held exactly as an
/// integer number of nano-units, as `k8s.io/apimachinery`'s `resource.Quantity` is exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Quantity {
    nano: i128,
}

/// Why a string is not a Kubernetes quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a Kubernetes quantity: {problem}")]
pub struct QuantityError {
    /// The text given.
    pub text: String,
    /// What is wrong with it.
    pub problem: &'static str,
}

const NANO: i128 = 1_000_000_000;

impl Quantity {
    /// Parses Kubernetes' quantity grammar: an optionally signed decimal number, then a binary
    /// suffix (`Ki` .. `Ei`), a decimal suffix (`n`, `u`, `m`, none, `k`, `M`, `G`, `T`, `P`,
    /// `E`) or a decimal exponent (`e3`, `E-2`). Precision below one nano-unit rounds up, as in
    /// Kubernetes.
    ///
    /// ```
    /// use flotilla::placement::capacity::Quantity;
    /// assert_eq!(Quantity::parse("500m").unwrap().milli_value(), 500);
    /// assert_eq!(Quantity::parse("128Mi").unwrap().value(), 128 << 20);
    /// assert_eq!(Quantity::parse("1e3").unwrap().value(), 1000);
    /// ```
    pub fn parse(text: &str) -> Result<Quantity, QuantityError> {
        let fail = |problem| QuantityError {
            text: text.to_string(),
            problem,
        };
        let trimmed = text.trim();
        let (negative, rest) = match trimmed.as_bytes().first() {
            Some(b'-') => (true, &trimmed[1..]),
            Some(b'+') => (false, &trimmed[1..]),
            Some(_) => (false, trimmed),
            None => return Err(fail("it is empty")),
        };
        let number_len = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(number_len);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() {
            return Err(fail("it has no digits"));
        }
        if fraction.contains('.') {
            return Err(fail("it has two decimal points"));
        }
        // 38 digits overflow i128; Kubernetes quantities never need so many.
        let digits = format!("{whole}{fraction}");
        let digits = digits.trim_start_matches('0');
        if digits.len() > 30 {
            return Err(fail("it has too many digits"));
        }
        let mantissa: i128 = if digits.is_empty() {
            0
        } else {
            digits
                .parse()
                .map_err(|_| fail("its digits do not parse"))?
        };
        // value = mantissa * numerator / denominator nano-units, every step checked.
        let too_large = || fail("it is too large or too precise");
        let power = |exponent: u32| 10i128.checked_pow(exponent);
        let (numerator, denominator): (Option<i128>, Option<i128>) = match suffix {
            "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => {
                let step = "KMGTPE".find(&suffix[..1]).unwrap_or(0) as u32 + 1;
                (NANO.checked_mul(1i128 << (10 * step)), Some(1))
            }
            "n" => (Some(1), Some(1)),
            "u" => (power(3), Some(1)),
            "m" => (power(6), Some(1)),
            "" => (power(9), Some(1)),
            "k" => (power(12), Some(1)),
            "M" => (power(15), Some(1)),
            "G" => (power(18), Some(1)),
            "T" => (power(21), Some(1)),
            "P" => (power(24), Some(1)),
            "E" => (power(27), Some(1)),
            _ => {
                let exponent = suffix
                    .strip_prefix(['e', 'E'])
                    .and_then(|e| e.parse::<i32>().ok())
                    .ok_or_else(|| {
                        fail("unknown suffix (Ki..Ei, n, u, m, k, M, G, T, P, E or e<N>)")
                    })?;
                let shift = exponent.checked_add(9).ok_or_else(too_large)?;
                if shift >= 0 {
                    (power(shift.unsigned_abs()), Some(1))
                } else {
                    (Some(1), power(shift.unsigned_abs()))
                }
            }
        };
        let denominator = denominator
            .zip(power(fraction.len() as u32))
            .and_then(|(d, f)| d.checked_mul(f))
            .ok_or_else(too_large)?;
        let numerator = numerator.ok_or_else(too_large)?;
        let scaled = mantissa.checked_mul(numerator).ok_or_else(too_large)?;
        // Below a nano-unit rounds up (away from zero), as Kubernetes does.
        let magnitude = ceil_div(scaled, denominator);
        Ok(Quantity {
            nano: if negative { -magnitude } else { magnitude },
        })
    }

    /// The value rounded up to a whole unit (Kubernetes' `Quantity.Value()`).
    pub fn value(&self) -> i128 {
        ceil_div(self.nano, NANO)
    }

    /// The value in thousandths rounded up (Kubernetes' `Quantity.MilliValue()`).
    pub fn milli_value(&self) -> i128 {
        ceil_div(self.nano, 1_000_000)
    }

    /// Whether the quantity is below zero.
    pub fn is_negative(&self) -> bool {
        self.nano < 0
    }
}

/// Division rounding toward positive infinity.
fn ceil_div(value: i128, by: i128) -> i128 {
    let quotient = value.div_euclid(by);
    if value.rem_euclid(by) == 0 {
        quotient
    } else {
        quotient + 1
    }
}

impl std::ops::Sub for Quantity {
    type Output = Quantity;
    fn sub(self, other: Quantity) -> Quantity {
        Quantity {
            nano: self.nano.saturating_sub(other.nano),
        }
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nano % NANO == 0 {
            write!(f, "{}", self.nano / NANO)
        } else {
            write!(f, "{}n", self.nano)
        }
    }
}

// ----- the capacity file -----

/// The free resources of every member cluster: Karmada's `Cluster.status.resourceSummary`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capacity {
    /// Per cluster name.
    pub clusters: BTreeMap<String, ClusterResources>,
}

/// One cluster's resource summary. Missing resources count zero, as in Karmada.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterResources {
    /// What the nodes offer to pods.
    pub allocatable: BTreeMap<String, Quantity>,
    /// What running pods request (Karmada's `allocated`).
    pub requested: BTreeMap<String, Quantity>,
    /// What pending pods request (Karmada's `allocating`).
    pub allocating: BTreeMap<String, Quantity>,
}

/// A capacity file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CapacityError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not YAML.
    #[error("{}: not YAML: {problem}", path.display())]
    Yaml {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        problem: String,
    },
    /// A field is unknown, missing or wrong.
    #[error("{}: {}{field}: {problem}", path.display(), cluster.as_ref().map(|c| format!("cluster {c}: ")).unwrap_or_default())]
    Field {
        /// The file.
        path: PathBuf,
        /// The cluster, when the field is one of a cluster's.
        cluster: Option<String>,
        /// Dotted path of the field within the cluster (or the file).
        field: String,
        /// What is wrong.
        problem: String,
    },
}

impl Capacity {
    /// Reads a capacity file:
    ///
    /// ```yaml
    /// clusters:
    ///   member1:
    ///     allocatable: {cpu: "32", memory: 128Gi, pods: "110"}
    ///     requested:   {cpu: "4",  memory: 16Gi,  pods: "20"}
    /// ```
    ///
    /// `allocatable` is required, with `pods` (Karmada's estimator allows no pod where it is
    /// missing, so leaving it out is surely a mistake); `requested` and `allocating` are
    /// optional. Unknown fields are refused.
    pub fn load(path: &Path) -> Result<Capacity, CapacityError> {
        let text = std::fs::read_to_string(path).map_err(|source| CapacityError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Capacity::parse(&text, path)
    }

    /// [`Capacity::load`] on text already read; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Capacity, CapacityError> {
        let value: Value = serde_saphyr::from_str(text).map_err(|e| CapacityError::Yaml {
            path: path.to_path_buf(),
            problem: e.to_string(),
        })?;
        let field = |cluster: Option<&str>, field: &str, problem: String| CapacityError::Field {
            path: path.to_path_buf(),
            cluster: cluster.map(str::to_string),
            field: field.to_string(),
            problem,
        };
        let root = value
            .as_object()
            .ok_or_else(|| field(None, "(file)", "must be a mapping with `clusters`".into()))?;
        if let Some(unknown) = root.keys().find(|k| *k != "clusters") {
            return Err(field(
                None,
                unknown,
                "unknown field (only `clusters`)".into(),
            ));
        }
        let clusters = root
            .get("clusters")
            .ok_or_else(|| field(None, "clusters", "missing".into()))?
            .as_object()
            .ok_or_else(|| {
                field(
                    None,
                    "clusters",
                    "must map cluster names to resources".into(),
                )
            })?;
        let mut capacity = Capacity::default();
        for (name, entry) in clusters {
            let entry = entry.as_object().ok_or_else(|| {
                field(
                    Some(name),
                    "(cluster)",
                    "must be a mapping with `allocatable`".into(),
                )
            })?;
            let mut resources = ClusterResources::default();
            for (key, list) in entry {
                let target = match key.as_str() {
                    "allocatable" => &mut resources.allocatable,
                    "requested" => &mut resources.requested,
                    "allocating" => &mut resources.allocating,
                    _ => {
                        return Err(field(
                            Some(name),
                            key,
                            "unknown field (allocatable, requested, allocating)".into(),
                        ));
                    }
                };
                *target = resource_list(list).map_err(|(resource, problem)| {
                    field(Some(name), &dotted(key, &resource), problem)
                })?;
            }
            if !entry.contains_key("allocatable") {
                return Err(field(Some(name), "allocatable", "missing".into()));
            }
            if !resources.allocatable.contains_key("pods") {
                return Err(field(
                    Some(name),
                    "allocatable.pods",
                    "missing: Karmada's estimator places no replica on a cluster without it".into(),
                ));
            }
            capacity.clusters.insert(name.clone(), resources);
        }
        Ok(capacity)
    }
}

fn dotted(parent: &str, child: &str) -> String {
    if child.is_empty() {
        parent.to_string()
    } else {
        format!("{parent}.{child}")
    }
}

/// A `{resource: quantity}` mapping; quantities may be YAML strings or numbers, never negative.
/// The error names the resource (empty for the mapping itself).
fn resource_list(value: &Value) -> Result<BTreeMap<String, Quantity>, (String, String)> {
    let map = value.as_object().ok_or_else(|| {
        (
            String::new(),
            "must map resource names to quantities".to_string(),
        )
    })?;
    let mut list = BTreeMap::new();
    for (resource, quantity) in map {
        let text = match quantity {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => {
                return Err((resource.clone(), format!("{other} is not a quantity")));
            }
        };
        let parsed = Quantity::parse(&text).map_err(|e| (resource.clone(), e.to_string()))?;
        if parsed.is_negative() {
            return Err((resource.clone(), format!("{text:?} is negative")));
        }
        list.insert(resource.clone(), parsed);
    }
    Ok(list)
}

// ----- the estimator -----

/// What one replica requests, per resource: milli-units for `cpu`, whole units for the rest,
/// each container's request rounded up first, as Karmada's `util.Resource` holds them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaRequirements {
    /// Resource name -> request; only resources some container requests.
    pub requests: BTreeMap<String, i128>,
}

/// Whether Karmada's `util.Resource` keeps a resource: the four it names, plus scalar resources
/// (`resourcehelper.IsScalarResourceName`: extended `domain/name` resources such as
/// `nvidia.com/gpu`, prefixed native `kubernetes.io/...`, `hugepages-*`,
/// `attachable-volumes-*`). Any other name is dropped, as Karmada drops it.
fn counted_resource(name: &str) -> bool {
    matches!(name, "cpu" | "memory" | "ephemeral-storage" | "pods")
        || name.contains('/')
        || name.starts_with("hugepages-")
        || name.starts_with("attachable-volumes-")
}

/// One resource's quantity as Karmada's `util.Resource` adds it: `MilliValue()` for `cpu`,
/// `Value()` for everything else.
fn resource_units(name: &str, quantity: &Quantity) -> i128 {
    if name == "cpu" {
        quantity.milli_value()
    } else {
        quantity.value()
    }
}

impl ReplicaRequirements {
    /// The per-replica requests of a workload template (`spec.template.spec`), by Karmada's
    /// `Resource.AddPodTemplateRequest`: a container's limits stand in for requests it does
    /// not set; app containers add up; each init container raises a resource to its own
    /// request if larger; `overhead` adds on top. The error names the field.
    pub fn from_template(template: &Value) -> Result<ReplicaRequirements, String> {
        let mut requirements = ReplicaRequirements::default();
        let Some(pod) = template.pointer("/spec/template/spec") else {
            return Ok(requirements);
        };
        let containers = |key: &str| -> Vec<(String, &Value)> {
            pod.get(key)
                .and_then(Value::as_array)
                .map(|list| {
                    list.iter()
                        .enumerate()
                        .map(|(i, c)| (format!("spec.template.spec.{key}[{i}]"), c))
                        .collect()
                })
                .unwrap_or_default()
        };
        for (path, container) in containers("containers") {
            for (name, units) in container_requests(&path, container)? {
                *requirements.requests.entry(name).or_insert(0) += units;
            }
        }
        for (path, container) in containers("initContainers") {
            for (name, units) in container_requests(&path, container)? {
                let entry = requirements.requests.entry(name).or_insert(0);
                *entry = (*entry).max(units);
            }
        }
        if let Some(overhead) = pod.get("overhead") {
            for (name, units) in quantities("spec.template.spec.overhead", overhead)? {
                *requirements.requests.entry(name).or_insert(0) += units;
            }
        }
        Ok(requirements)
    }
}

/// A container's effective requests: `requests`, with `limits` for what they leave out.
fn container_requests(path: &str, container: &Value) -> Result<BTreeMap<String, i128>, String> {
    let mut requests = match container.pointer("/resources/requests") {
        Some(list) => quantities(&format!("{path}.resources.requests"), list)?,
        None => BTreeMap::new(),
    };
    if let Some(limits) = container.pointer("/resources/limits") {
        for (name, units) in quantities(&format!("{path}.resources.limits"), limits)? {
            requests.entry(name).or_insert(units);
        }
    }
    Ok(requests)
}

/// A template's resource list in Karmada's units, without the names Karmada drops.
fn quantities(path: &str, list: &Value) -> Result<BTreeMap<String, i128>, String> {
    let Some(map) = list.as_object() else {
        return Err(format!("{path}: must map resource names to quantities"));
    };
    let mut out = BTreeMap::new();
    for (name, value) in map {
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => return Err(format!("{path}.{name}: {other} is not a quantity")),
        };
        let quantity = Quantity::parse(&text).map_err(|e| format!("{path}.{name}: {e}"))?;
        if counted_resource(name) {
            out.insert(name.clone(), resource_units(name, &quantity));
        }
    }
    Ok(out)
}

/// How many more replicas a cluster can take, by Karmada's general estimator
/// (`GeneralEstimator.maxAvailableReplicas`): the free pod slots (`allocatable - requested -
/// allocating` pods), and for each resource a replica requests, its free amount divided by the
/// request, whichever is least. A cluster without a summary, or without a resource a replica
/// requests, takes none. Capped at `int32`'s maximum, Karmada's replica type.
pub fn available_replicas(
    cluster: Option<&ClusterResources>,
    requirements: &ReplicaRequirements,
) -> u64 {
    let Some(cluster) = cluster else {
        return 0;
    };
    let free = |name: &str| -> Option<Quantity> {
        let allocatable = *cluster.allocatable.get(name)?;
        let zero = Quantity::default();
        Some(
            allocatable
                - *cluster.requested.get(name).unwrap_or(&zero)
                - *cluster.allocating.get(name).unwrap_or(&zero),
        )
    };
    // Karmada takes `Value()` of each pod count before subtracting.
    let pods = |list: &BTreeMap<String, Quantity>| list.get("pods").map_or(0, Quantity::value);
    let slots = pods(&cluster.allocatable) - pods(&cluster.requested) - pods(&cluster.allocating);
    if slots <= 0 {
        return 0;
    }
    let mut most = slots;
    for (name, &request) in &requirements.requests {
        // Karmada skips a request whose `Value()` is not positive: for cpu, any milli above 0.
        if request <= 0 {
            continue;
        }
        let Some(available) = free(name) else {
            return 0;
        };
        if available.value() <= 0 {
            return 0;
        }
        most = most.min(resource_units(name, &available) / request);
    }
    most.clamp(0, MAX_REPLICAS as i128) as u64
}

// ----- division -----

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
struct Weighted<'a> {
    name: &'a str,
    weight: u64,
    last: u64,
}

/// Karmada's `Dispenser.TakeByWeight`: each cluster gets `floor(weight * replicas / sum)`, and
/// the remainder goes one each to the clusters in order of weight (largest first), then of
/// previous replicas (largest first). Karmada breaks the last tie at random; a plan must not
/// change between runs, so here the lower name wins. The result is merged into `init`.
fn take_by_weight(replicas: u64, mut weights: Vec<Weighted>, init: &mut BTreeMap<String, u64>) {
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

// ----- placing one template -----

/// Places a Divided template by capacity: each candidate's available replicas from
/// `capacity`, then [`divide_in_tiers`] over `tiers` (the candidates, then each overflow
/// tier's) by `assignment`, with `previous`, the resource's last division (empty offline: a
/// first schedule). Without a capacity the
/// resource fails, naming what is missing. Candidates the capacity does not list can take
/// nothing (Karmada's estimator gives a cluster without a resource summary 0), with a warning.
#[allow(clippy::too_many_arguments)]
pub(super) fn place(
    division: Division,
    total: u64,
    template: &Object,
    tiers: &[Vec<&Cluster>],
    capacity: Option<&Capacity>,
    previous: &[(&str, u64)],
    assignment: Assignment,
    warnings: &mut Vec<Warning>,
    policy: &str,
) -> Result<Vec<Target>, String> {
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
        return Err(format!(
            "replicaScheduling: {division} needs each cluster's available replicas: give `--capacity FILE` to plan/render (the agent reads them from the member clusters' Nodes and Pods)"
        ));
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
        .map_err(|e| format!("replicaScheduling: {division}: {e}"))?;
    Ok(shares
        .into_iter()
        .map(|(cluster, n)| Target {
            cluster,
            replicas: Some(n),
        })
        .collect())
}

#[cfg(test)]
mod tests;
