//! Capacity-based replica division, as Karmada's scheduler does it: `replicaDivisionPreference:
//! Aggregated` and `weightPreference.dynamicWeight: AvailableReplicas`.
//!
//! Pure: the clusters' free resources come in as a [`Capacity`] (an offline file for
//! `flotilla plan --capacity`, or the agent's reading of the members). This module holds that
//! input and its file format; three parts, each after one part of Karmada, do the rest:
//!
//! - [`quantity`]: Kubernetes resource quantities, exactly (integers of 10^-9, no floats).
//! - [`estimate`]: [`ReplicaRequirements`] and [`available_replicas`], Karmada's general
//!   estimator (`pkg/estimator/client/general.go`) over the per-replica requests Karmada derives
//!   from the pod template (`pkg/util/resource.go`, `AddPodTemplateRequest`).
//! - [`division`]: [`divide`], Karmada's dynamic assignment (`pkg/scheduler/core/assignment.go`
//!   `assignByDynamicStrategy`, `division_algorithm.go` `dynamicScaleUp`/`dynamicScaleDown`/
//!   `dynamicFreshScale`/`dynamicDivideReplicas`, and the `Dispenser` of `pkg/util/helper`),
//!   in either [`Assignment`] mode: `Steady` (replicas already placed stay where they are) or
//!   `Fresh` (everything divided anew, the previous replicas counted as room).

pub mod division;
pub mod estimate;
pub mod quantity;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

pub use division::{
    Assignment, Division, NotEnoughCapacity, divide, divide_fresh, divide_in_tiers,
};
pub use estimate::{ReplicaRequirements, RequirementsError, available_replicas};
pub use quantity::{Quantity, QuantityError};

/// Karmada counts replicas in `int32`: no cluster is worth more than this many.
const MAX_REPLICAS: u64 = i32::MAX as u64;

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
        use std::io::Read;
        let failed = |source| CapacityError::Read {
            path: path.to_path_buf(),
            source,
        };
        // Only a regular file, at most as large as a fleet file may be: `/dev/zero` or a FIFO
        // given by mistake must fail at once, not read forever.
        let limit = crate::limits::RenderLimits::default().max_file_size;
        // Checked before opening: opening a FIFO blocks until a writer comes.
        if !std::fs::metadata(path).map_err(failed)?.is_file() {
            return Err(failed(std::io::Error::other("not a regular file")));
        }
        let file = std::fs::File::open(path).map_err(failed)?;
        let mut text = String::new();
        file.take(limit + 1)
            .read_to_string(&mut text)
            .map_err(failed)?;
        if text.len() as u64 > limit {
            return Err(failed(std::io::Error::other(format!(
                "over the limit of {limit} bytes"
            ))));
        }
        Capacity::parse(&text, path)
    }

    /// [`Capacity::load`] on text already read; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Capacity, CapacityError> {
        // Read as fleet files are: alias replay and nesting bounded, a one-line message.
        let options = crate::render::load::yaml_options(crate::render::load::Dialect::Kubernetes);
        let value: Value = serde_saphyr::from_str_with_options(text, options).map_err(|e| {
            CapacityError::Yaml {
                path: path.to_path_buf(),
                problem: e.to_string().lines().next().unwrap_or("").to_string(),
            }
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

#[cfg(test)]
mod tests;
