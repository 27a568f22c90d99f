//! Karmada's general estimator (`pkg/estimator/client/general.go`): what one replica of a
//! workload requests, from its pod template (`pkg/util/resource.go`, `AddPodTemplateRequest`),
//! and how many such replicas a cluster's free resources hold.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{ClusterResources, MAX_REPLICAS, Quantity, QuantityError};

/// What one replica requests, per resource: milli-units for `cpu`, whole units for the rest,
/// each container's request rounded up first, as Karmada's `util.Resource` holds them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaRequirements {
    /// Resource name -> request; only resources some container requests.
    pub requests: BTreeMap<String, i128>,
}

/// A resource list of a pod template that does not read; the field is a dotted path
/// (`spec.template.spec.containers[0].resources.requests.cpu`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequirementsError {
    /// `requests`, `limits` or `overhead` is not a mapping.
    #[error("{field}: must map resource names to quantities")]
    NotAMapping {
        /// The list's path.
        field: String,
    },
    /// A resource's value is neither a string nor a number.
    #[error("{field}: {value} is not a quantity")]
    NotAQuantity {
        /// The resource's path.
        field: String,
        /// The value found.
        value: Value,
    },
    /// A resource's value is not a Kubernetes quantity.
    #[error("{field}")]
    Quantity {
        /// The resource's path.
        field: String,
        /// Why it does not parse.
        #[source]
        source: QuantityError,
    },
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
    pub fn from_template(template: &Value) -> Result<ReplicaRequirements, RequirementsError> {
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
fn container_requests(
    path: &str,
    container: &Value,
) -> Result<BTreeMap<String, i128>, RequirementsError> {
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
fn quantities(path: &str, list: &Value) -> Result<BTreeMap<String, i128>, RequirementsError> {
    let Some(map) = list.as_object() else {
        return Err(RequirementsError::NotAMapping {
            field: path.to_string(),
        });
    };
    let mut out = BTreeMap::new();
    for (name, value) in map {
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => {
                return Err(RequirementsError::NotAQuantity {
                    field: format!("{path}.{name}"),
                    value: other.clone(),
                });
            }
        };
        let quantity = Quantity::parse(&text).map_err(|source| RequirementsError::Quantity {
            field: format!("{path}.{name}"),
            source,
        })?;
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
