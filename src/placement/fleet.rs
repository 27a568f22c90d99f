//! The member clusters, from Kurator's `Fleet` and `AttachedCluster`, and the Fleet's default
//! placement.

use std::collections::BTreeMap;

use serde_json::Value;

use super::policy::{Propagation, read_spec};
use super::types::*;
use super::{Cluster, PlanError, Warning};
use crate::object::{Object, Origin};

/// The member clusters: every Fleet's entries, labels merged with their AttachedClusters.
/// Without a Fleet, the AttachedClusters themselves are the members.
pub(super) fn read_clusters(
    fleets: &[&Object],
    attached: &[&Object],
    warnings: &mut Vec<Warning>,
) -> Result<Vec<Cluster>, PlanError> {
    let mut clusters: BTreeMap<String, (Cluster, Origin)> = BTreeMap::new();
    for fleet in fleets {
        let spec: FleetSpec = read_spec(fleet)?;
        for (index, entry) in spec.clusters.into_iter().enumerate() {
            if let Some(problem) = cluster_name_problem(&entry.name) {
                return Err(PlanError::InvalidField {
                    origin: fleet.origin.clone(),
                    kind: "Fleet".into(),
                    name: fleet.name().to_string(),
                    field: format!("spec.clusters[{index}].name"),
                    problem: format!("{:?} {problem}", entry.name),
                });
            }
            let cluster = Cluster {
                name: entry.name.clone(),
                labels: entry.labels,
                provider: entry.provider,
                region: entry.region,
                zones: entry.zones,
                taints: entry.taints,
                kubeconfig_secret: None,
            };
            if let Some((_, first)) = clusters.get(&entry.name) {
                return Err(PlanError::DuplicateCluster {
                    name: entry.name,
                    first: first.clone(),
                    second: fleet.origin.clone(),
                });
            }
            clusters.insert(entry.name, (cluster, fleet.origin.clone()));
        }
    }
    for object in attached {
        let spec: AttachedClusterSpec = read_spec(object)?;
        let secret = spec.kubeconfig.and_then(|k| match k.secret_ref {
            Some(secret) => Some(secret),
            None => k.name.map(|name| SecretKeyRef {
                name,
                key: k.key.unwrap_or_default(),
            }),
        });
        let name = object.name().to_string();
        if let Some(problem) = cluster_name_problem(&name) {
            return Err(PlanError::InvalidField {
                origin: object.origin.clone(),
                kind: "AttachedCluster".into(),
                name: name.clone(),
                field: "metadata.name".into(),
                problem: format!("{name:?} {problem}"),
            });
        }
        // Without a Fleet, every AttachedCluster is a member.
        if fleets.is_empty() {
            clusters
                .entry(name.clone())
                .or_insert_with(|| (Cluster::new(&name), object.origin.clone()));
        }
        let Some((cluster, _)) = clusters.get_mut(&name) else {
            warnings.push(Warning {
                kind: "attached_cluster_not_in_fleet",
                message: format!(
                    "{}: AttachedCluster {name}: no Fleet lists it; it is not a member",
                    object.origin
                ),
            });
            continue;
        };
        for (key, value) in object.labels() {
            cluster.labels.insert(key.to_string(), value.to_string());
        }
        cluster.kubeconfig_secret = secret;
    }
    if clusters.is_empty() {
        return Err(PlanError::NoClusters);
    }
    Ok(clusters.into_values().map(|(c, _)| c).collect())
}

/// Why a cluster name cannot be one: it names a kubeconfig context, a directory of
/// `render --out` and a label value, so what no Kubernetes name can be is refused for every
/// command alike (`plan` used to accept `../x` that `render --out` refused).
fn cluster_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name == "." || name == ".." {
        Some("is `.` or `..`")
    } else if name.contains(['/', '\\', '%', '\0']) {
        Some("contains `/`, `\\`, `%` or NUL, which no Kubernetes name may")
    } else if name.len() > 253 {
        Some("is longer than 253 bytes")
    } else {
        None
    }
}

/// Reads a Fleet's `spec.placement` as a Karmada placement, dropping (with a warning) the
/// fields a Karmada `Placement` lacks, as Kurator's articles show extra ones.
pub(super) fn fleet_placement(
    fleet: &Object,
    placement: &Value,
    warnings: &mut Vec<Warning>,
) -> Result<Propagation, PlanError> {
    let mut value = placement.clone();
    loop {
        match serde_path_to_error::deserialize::<_, Placement>(value.clone()) {
            Ok(placement) => {
                return Ok(Propagation {
                    label: format!("Fleet {} (spec.placement)", fleet.name()),
                    namespaced: false,
                    namespace: String::new(),
                    name: fleet.name().to_string(),
                    spec: PropagationSpec {
                        placement,
                        priority: i32::MIN,
                        ..Default::default()
                    },
                    fallback: true,
                });
            }
            Err(error) => {
                let path: Vec<String> = error.path().iter().map(|s| s.to_string()).collect();
                let message = error.inner().to_string();
                let removed = message.starts_with("unknown field") && remove_at(&mut value, &path);
                if !removed {
                    return Err(PlanError::InvalidField {
                        origin: fleet.origin.clone(),
                        kind: "Fleet".into(),
                        name: fleet.name().to_string(),
                        field: format!("spec.placement.{}", path.join(".")),
                        problem: message,
                    });
                }
                warnings.push(Warning {
                    kind: "fleet_placement_field",
                    message: format!(
                        "{}: Fleet {}: spec.placement.{}: not a field of a Karmada Placement; ignored",
                        fleet.origin,
                        fleet.name(),
                        path.join(".")
                    ),
                });
            }
        }
    }
}

/// Removes the entry at `path` (map keys and list indices); false when nothing was there.
fn remove_at(value: &mut Value, path: &[String]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut current = value;
    for segment in parents {
        let next = match current {
            Value::Object(map) => map.get_mut(segment),
            Value::Array(list) => segment.parse::<usize>().ok().and_then(|i| list.get_mut(i)),
            _ => None,
        };
        match next {
            Some(next) => current = next,
            None => return false,
        }
    }
    current
        .as_object_mut()
        .is_some_and(|map| map.remove(last).is_some())
}
