//! Pruning: deleting what left the plan, only when it is the very object Flotilla created.

use std::collections::HashSet;

use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::inventory::{Entry, Inventory};
use super::member::Member;
use super::prepare::{object_path, wave};
use super::{ClusterReport, INVENTORY_LABEL, ObjectError, ObjectProblem, PRUNE_ANNOTATION};
use crate::object::ObjectRef;

/// Deletes the objects that left the plan, newest wave first (custom resources before their
/// CRD, namespaced objects before their Namespace).
pub(super) async fn prune(
    member: &Member,
    mut leaving: Vec<&Entry>,
    next: &mut Inventory,
    report: &mut ClusterReport,
    sync_name: &str,
) {
    // An object applied under another apiVersion (an Ingress moved from extensions to
    // networking.k8s.io) keeps its uid: it is not leaving.
    let staying_uids: HashSet<String> = next.entries.values().map(|e| e.uid.clone()).collect();
    leaving.retain(|entry| !staying_uids.contains(&entry.uid));
    leaving.sort_by_key(|entry| std::cmp::Reverse(wave(&entry.object_ref(), None)));
    for entry in leaving {
        let object_ref = entry.object_ref();
        let outcome = match namespace_still_holding(entry, next, report) {
            Some(reason) => Ok(PruneOutcome::Kept {
                reason,
                retain: true,
            }),
            None => prune_one(member, entry, sync_name).await,
        };
        match outcome {
            Ok(PruneOutcome::Deleted) => {
                report.writes += 1;
                report.pruned.push(object_ref);
            }
            Ok(PruneOutcome::Gone) => {}
            Ok(PruneOutcome::Kept { reason, retain }) => {
                if retain {
                    next.entries.insert(object_ref.clone(), entry.clone());
                }
                report.kept.push(ObjectProblem::kept(object_ref, reason));
            }
            Err(error) => {
                report
                    .failed
                    .push(ObjectProblem::failed(object_ref.clone(), &error));
                next.entries.insert(object_ref, entry.clone());
            }
        }
    }
}

/// Deleting a Namespace deletes everything in it: a Namespace that still holds an object this
/// sync keeps (planned, annotated, or failing to prune) stays, and says why.
fn namespace_still_holding(
    entry: &Entry,
    next: &Inventory,
    report: &ClusterReport,
) -> Option<String> {
    if !(entry.api_version == "v1" && entry.kind == "Namespace") {
        return None;
    }
    let inside = |object: &ObjectRef| object.namespace == entry.name;
    let holder = next
        .entries
        .keys()
        .find(|object| inside(object))
        .or_else(|| report.kept.iter().map(|k| &k.object).find(|o| inside(o)))
        .or_else(|| report.failed.iter().map(|f| &f.object).find(|o| inside(o)))?;
    Some(format!(
        "still holds {holder}, which stays; deleting the Namespace would delete it"
    ))
}

enum PruneOutcome {
    Deleted,
    /// Already deleted by someone else.
    Gone,
    /// Left in place, with the reason; `retain` keeps it in the inventory, so that it is pruned
    /// once the reason goes (the annotation is removed).
    Kept {
        reason: String,
        retain: bool,
    },
}

/// What pruning would do to one inventory entry, before anything is deleted.
pub enum PruneCheck {
    /// The object is gone already.
    Gone,
    /// The object stays, for this reason; `retain`: it is still Flotilla's, to prune later.
    Kept {
        /// Why it stays.
        reason: String,
        /// Whether it stays in the inventory.
        retain: bool,
    },
    /// The object is Flotilla's to delete: its URL and live state.
    Delete {
        /// The object's URL path.
        path: String,
        /// The live object.
        live: Value,
    },
}

/// Decides whether an inventory entry that left the plan may be deleted: only the very object
/// Flotilla created (same uid), and not when annotated `flotilla.dev/prune: disabled`.
pub async fn prune_check(
    member: &Member,
    entry: &Entry,
    sync_name: &str,
) -> Result<PruneCheck, ObjectError> {
    let resource = match member.resource(&entry.api_version, &entry.kind).await {
        Ok(Some(resource)) => resource,
        // The kind is not served any more (its CRD was deleted): so is the object.
        Ok(None) => return Ok(PruneCheck::Gone),
        Err(error) => return Err(error.into()),
    };
    let path = object_path(&entry.object_ref(), &resource);
    let Some(reply) = member.get(&path).await? else {
        return Ok(PruneCheck::Gone);
    };
    if !reply.status.is_success() {
        return Err(ObjectError::Answered {
            status: reply.status,
            message: reply.message(),
        });
    }
    let live = reply.json();
    let uid = live.pointer("/metadata/uid").and_then(Value::as_str);
    if uid != Some(entry.uid.as_str()) {
        return Ok(PruneCheck::Kept {
            reason: "not the object Flotilla applied (its uid changed): left in place".into(),
            retain: false,
        });
    }
    if !entry.created {
        return Ok(PruneCheck::Kept {
            reason: "existed before Flotilla applied it: left in place".into(),
            retain: false,
        });
    }
    let annotation = live
        .pointer(&format!(
            "/metadata/annotations/{}",
            PRUNE_ANNOTATION.replace('/', "~1")
        ))
        .and_then(Value::as_str);
    if annotation == Some("disabled") {
        return Ok(PruneCheck::Kept {
            reason: format!("annotated {PRUNE_ANNOTATION}: disabled"),
            retain: true,
        });
    }
    let owner = live
        .pointer(&format!(
            "/metadata/labels/{}",
            INVENTORY_LABEL.replace('/', "~1")
        ))
        .and_then(Value::as_str);
    if let Some(owner) = owner.filter(|owner| *owner != sync_name) {
        return Ok(PruneCheck::Kept {
            reason: format!("now applied by the sync named {owner}: left to it"),
            retain: false,
        });
    }
    Ok(PruneCheck::Delete { path, live })
}

async fn prune_one(
    member: &Member,
    entry: &Entry,
    sync_name: &str,
) -> Result<PruneOutcome, ObjectError> {
    let path = match prune_check(member, entry, sync_name).await? {
        PruneCheck::Gone => return Ok(PruneOutcome::Gone),
        PruneCheck::Kept { reason, retain } => return Ok(PruneOutcome::Kept { reason, retain }),
        PruneCheck::Delete { path, .. } => path,
    };
    let options = json!({
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "propagationPolicy": "Background",
        "preconditions": {"uid": entry.uid},
    });
    let reply = member
        .send(
            Method::DELETE,
            &path,
            Some("application/json"),
            Some(options.to_string().as_bytes()),
        )
        .await?;
    match reply.status {
        status if status.is_success() => Ok(PruneOutcome::Deleted),
        StatusCode::NOT_FOUND => Ok(PruneOutcome::Gone),
        status => Err(ObjectError::Answered {
            status,
            message: reply.message(),
        }),
    }
}
