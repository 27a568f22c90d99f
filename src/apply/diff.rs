//! `flotilla diff`: what a sync would change in one cluster, found with server-side dry-run.
//!
//! An update is the difference between the live object and the apiserver's dry-run of the
//! apply, both without the fields the server keeps for itself (managedFields, resourceVersion,
//! status, ...). Fields the server defaults are in both, so they never show.

use std::collections::BTreeSet;

use futures::stream::StreamExt;
use serde::Serialize;
use serde_json::Value;

use super::prepare::object_path;
use super::{
    Inventory, Member, ObjectError, ObjectProblem, PruneCheck, SyncOptions, apply_one, is_kept,
    prune_check,
};
use crate::object::{Object, ObjectRef};

/// What a sync would do to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// It does not exist yet.
    Create,
    /// It exists and would change.
    Update,
    /// It would be pruned.
    Delete,
}

/// One object that would change.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectDiff {
    /// The object.
    pub object: ObjectRef,
    /// The change.
    pub change: Change,
    /// A unified diff of the object as YAML, live first.
    pub diff: String,
}

/// What a sync would change in one cluster.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterDiff {
    /// The cluster.
    pub cluster: String,
    /// Why the cluster could not be compared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Objects that would change.
    pub changes: Vec<ObjectDiff>,
    /// Objects the dry-run refused, and why.
    pub failed: Vec<ObjectProblem>,
}

/// Metadata the apiserver owns; never part of a diff.
const SERVER_METADATA: &[&str] = &[
    "managedFields",
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "selfLink",
];

/// Drops what the server keeps for itself.
fn normalize(mut object: Value) -> Value {
    if let Some(map) = object.as_object_mut() {
        map.remove("status");
        if let Some(metadata) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            for field in SERVER_METADATA {
                metadata.remove(*field);
            }
        }
    }
    object
}

fn to_yaml(object: &Value) -> String {
    serde_saphyr::to_string(object).unwrap_or_else(|error| format!("# not shown: {error}\n"))
}

fn unified(object: &ObjectRef, old: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("live/{object}"), &format!("git/{object}"))
        .to_string()
}

/// Compares one cluster with its planned objects. Nothing is written.
pub async fn diff_cluster(
    member: &Member,
    desired: &[Object],
    keep: &BTreeSet<ObjectRef>,
    options: &SyncOptions,
) -> ClusterDiff {
    let mut result = ClusterDiff {
        cluster: member.name.clone(),
        error: None,
        changes: Vec::new(),
        failed: Vec::new(),
    };
    let mut inventory = match Inventory::load(member, &options.name).await {
        Ok(inventory) => inventory.unwrap_or_default(),
        Err(error) => {
            result.error = Some(error.to_string());
            return result;
        }
    };
    // As the sync will: what a sync that died was creating is pruned like the rest.
    if inventory.has_pending()
        && let Err(error) = super::resolve_pending_entries(member, &mut inventory, options).await
    {
        result.error = Some(error.to_string());
        return result;
    }
    let mut prepared = Vec::with_capacity(desired.len());
    for object in desired {
        match member.prepare(object, &options.name).await {
            Ok(object) => prepared.push(object),
            Err(error) => {
                result.error = Some(error.to_string());
                return result;
            }
        }
    }

    let outcomes: Vec<_> = futures::stream::iter(prepared.iter().map(|object| async move {
        let creation = || ObjectDiff {
            object: object.object_ref.clone(),
            change: Change::Create,
            diff: unified(
                &object.object_ref,
                "",
                &to_yaml(&serde_json::from_str(&object.body).unwrap_or(Value::Null)),
            ),
        };
        let Some(resource) = &object.resource else {
            // Its CRD comes in the same sync: the apiserver cannot dry-run it yet.
            return Ok(Some(creation()));
        };
        let live = match member
            .get(&object_path(&object.object_ref, resource))
            .await?
        {
            None => None,
            Some(reply) if reply.status.is_success() => Some(normalize(reply.json())),
            Some(reply) => {
                return Err(ObjectError::Answered {
                    status: reply.status,
                    message: format!("reading the live object: {}", reply.message()),
                });
            }
        };
        let dry_run = apply_one(member, object, true)
            .await
            .map_err(|failure| failure.error)?;
        Ok::<_, ObjectError>(match live {
            None => Some(creation()),
            Some(live) => {
                let (old, new) = (to_yaml(&live), to_yaml(&normalize(dry_run.live)));
                (old != new).then(|| ObjectDiff {
                    object: object.object_ref.clone(),
                    change: Change::Update,
                    diff: unified(&object.object_ref, &old, &new),
                })
            }
        })
    }))
    .buffered(options.concurrency.max(1))
    .collect()
    .await;
    for (object, outcome) in prepared.iter().zip(outcomes) {
        match outcome {
            Ok(Some(change)) => result.changes.push(change),
            Ok(None) => {}
            Err(error) => result
                .failed
                .push(ObjectProblem::failed(object.object_ref.clone(), &error)),
        }
    }

    let planned: BTreeSet<ObjectRef> = prepared.iter().map(|o| o.object_ref.clone()).collect();
    for (object_ref, entry) in &inventory.entries {
        if planned.contains(object_ref) || is_kept(keep, object_ref) {
            continue;
        }
        match prune_check(member, entry, &options.name).await {
            Ok(PruneCheck::Delete { live, .. }) => result.changes.push(ObjectDiff {
                object: object_ref.clone(),
                change: Change::Delete,
                diff: unified(object_ref, &to_yaml(&normalize(live)), ""),
            }),
            Ok(PruneCheck::Gone | PruneCheck::Kept { .. }) => {}
            Err(error) => result
                .failed
                .push(ObjectProblem::failed(object_ref.clone(), &error)),
        }
    }
    result
}
