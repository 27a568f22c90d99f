//! How two plans differ: each resource's presence and replicas per cluster.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::Plan;
use crate::object::ObjectRef;

/// How one resource's share of one cluster changes between two plans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicaChange {
    /// The resource.
    pub resource: ObjectRef,
    /// The cluster.
    pub cluster: String,
    /// Before: `None` absent, `Some(None)` present without replicas, `Some(Some(n))` n replicas.
    pub before: Option<Option<u64>>,
    /// After, in the same form.
    pub after: Option<Option<u64>>,
}

/// Every (resource, cluster) whose presence or replicas differ between two plans.
pub fn diff(before: &Plan, after: &Plan) -> Vec<ReplicaChange> {
    let shares = |plan: &Plan| -> BTreeMap<(ObjectRef, String), Option<u64>> {
        plan.resources
            .iter()
            .flat_map(|r| {
                r.targets
                    .iter()
                    .map(|t| ((r.resource.clone(), t.cluster.clone()), t.replicas))
            })
            .collect()
    };
    let (old, new) = (shares(before), shares(after));
    let keys: BTreeSet<&(ObjectRef, String)> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter_map(|key| {
            let (b, a) = (old.get(key).copied(), new.get(key).copied());
            (b != a).then(|| ReplicaChange {
                resource: key.0.clone(),
                cluster: key.1.clone(),
                before: b,
                after: a,
            })
        })
        .collect()
}
