//! One cluster's sync: the story of [`apply_cluster`], and the steps it calls, in order.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Instant;

use futures::stream::StreamExt;
use serde_json::Value;

use super::inventory::{self, Entry, INVENTORY_NAMESPACE, Inventory};
use super::member::{self, Member, RequestError, Resource};
use super::prepare::{Prepared, fix_ref_namespace, object_path};
use super::prune::prune;
use super::write::{UidList, apply_in_waves};
use super::{
    ClusterError, ClusterReport, ClusterStatus, INVENTORY_LABEL, ObjectError, ObjectProblem, Stage,
    SyncOptions, enter_stage, is_kept,
};
use crate::drift::DriftMode;
use crate::object::{Object, ObjectRef};

/// Syncs one cluster to `desired`; objects in `keep` are neither applied nor pruned.
///
/// With `drift` set (an agent's first sync after it starts, when no watch saw what happened
/// meanwhile), the objects the inventory says are unchanged are also compared with the live
/// objects (one full list per kind instead of a metadata list); those that drifted are applied
/// again in [`DriftMode::Correct`], unless annotated `flotilla.dev/drift: report`, and every
/// drift found is in the report.
pub async fn apply_cluster(
    member: &Member,
    desired: &[impl std::borrow::Borrow<Object>],
    keep: &BTreeSet<ObjectRef>,
    options: &SyncOptions,
    drift: Option<DriftMode>,
) -> ClusterReport {
    let started = Instant::now();
    let mut report = ClusterReport::new(&member.name);
    if let Err(error) = apply_steps(member, desired, keep, options, drift, &mut report).await {
        return ClusterReport::failed(&member.name, &error, started.elapsed());
    }
    if !report.failed.is_empty() {
        report.status = ClusterStatus::Degraded;
    }
    report.duration = started.elapsed();
    tracing::info!(
        applied = report.applied.len(),
        unchanged = report.unchanged.len(),
        pruned = report.pruned.len(),
        failed = report.failed.len(),
        writes = report.writes,
        elapsed_ms = report.duration.as_millis() as u64,
        "cluster synced"
    );
    report
}

/// The story of one cluster's sync, each step a call; an error fails the whole cluster before
/// anything was applied or pruned.
async fn apply_steps(
    member: &Member,
    desired: &[impl std::borrow::Borrow<Object>],
    keep: &BTreeSet<ObjectRef>,
    options: &SyncOptions,
    drift: Option<DriftMode>,
    report: &mut ClusterReport,
) -> Result<(), ClusterError> {
    // Read the inventory: what Flotilla applied here before, with what an earlier sync that
    // died was about to create resolved first.
    enter_stage(Stage::Inventory);
    let (previous, first_sync, recovered) = read_inventory(member, options).await?;

    // Prepare every desired object for this apiserver, and compare it with the inventory (and,
    // with `drift`, the live object): what is unchanged is left alone, nothing sent.
    let prepared = prepare_all(member, desired, options).await?;
    let planned: BTreeSet<ObjectRef> = prepared.iter().map(|o| o.object_ref.clone()).collect();
    enter_stage(Stage::Compare);
    let mut next = Inventory::default();
    let to_apply = compare(
        member, prepared, &previous, options, drift, &mut next, report,
    )
    .await?;

    // Record what is about to be created as pending, then apply in waves.
    enter_stage(Stage::Apply);
    let intent = record_intent(member, &to_apply, &previous, options, report).await?;
    apply_with_inventory_namespace(
        member,
        to_apply,
        &previous,
        &mut next,
        report,
        options,
        first_sync && !intent.written,
    )
    .await;
    keep_failed_creations_pending(&intent.absent, &mut next, report);

    // Prune what the plan no longer holds for this cluster.
    enter_stage(Stage::Prune);
    let leaving = leaving_entries(&previous, &mut next, &planned, keep);
    prune(member, leaving, &mut next, report, &options.name).await;

    // Write the inventory back, when it changed.
    enter_stage(Stage::Record);
    report.set_hash = next.set_hash();
    if next != previous || recovered || intent.written {
        store_inventory(member, &next, options, report).await;
    }
    Ok(())
}

/// The inventory as the last sync left it (empty on a first sync: the second value), with its
/// pending entries resolved (the third value says there were some).
async fn read_inventory(
    member: &Member,
    options: &SyncOptions,
) -> Result<(Inventory, bool, bool), ClusterError> {
    let (mut previous, first_sync) = match Inventory::load(member, &options.name).await {
        Ok(Some(inventory)) => (inventory, false),
        Ok(None) => (Inventory::default(), true),
        Err(error) => return Err(ClusterError::Inventory(error)),
    };
    // An earlier sync died (or failed to write its inventory) after recording what it was
    // about to create: find out what it did create before anything else.
    let recovered = previous.has_pending();
    if recovered {
        resolve_pending_entries(member, &mut previous, options).await?;
    }
    Ok((previous, first_sync, recovered))
}

/// Every desired object, ready to send to this apiserver.
async fn prepare_all(
    member: &Member,
    desired: &[impl std::borrow::Borrow<Object>],
    options: &SyncOptions,
) -> Result<Vec<Prepared>, ClusterError> {
    let mut prepared = Vec::with_capacity(desired.len());
    for object in desired {
        let object = member
            .prepare(object.borrow(), &options.name)
            .await
            .map_err(ClusterError::Request)?;
        prepared.push(object);
    }
    Ok(prepared)
}

/// The objects to apply: those not unchanged since the last sync, and, with `drift`, those
/// that drifted (to correct). Unchanged objects go into `next` and the report as they are.
async fn compare(
    member: &Member,
    prepared: Vec<Prepared>,
    previous: &Inventory,
    options: &SyncOptions,
    drift: Option<DriftMode>,
    next: &mut Inventory,
    report: &mut ClusterReport,
) -> Result<Vec<Prepared>, ClusterError> {
    let started = Instant::now();
    let (unchanged, live) = unchanged_objects(member, &prepared, previous, options, drift)
        .await
        .map_err(ClusterError::Request)?;
    let mut to_apply = Vec::new();
    for object in prepared {
        let Some(entry) = unchanged.get(&object.object_ref) else {
            to_apply.push(object);
            continue;
        };
        let found = drift
            .and(live.get(&entry.uid))
            .and_then(|live| crate::drift::drift_at_start(&member.name, &object, live));
        if let Some(found) = found {
            let correct = !found.report_only && drift == Some(DriftMode::Correct);
            report.drift.push(found);
            if correct {
                to_apply.push(object);
                continue;
            }
        }
        report.unchanged.push(object.object_ref.clone());
        next.entries
            .insert(object.object_ref.clone(), (*entry).clone());
    }
    tracing::debug!(
        cluster = %member.name,
        unchanged = report.unchanged.len(),
        to_apply = to_apply.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "compared with the inventory"
    );
    Ok(to_apply)
}

/// What [`record_intent`] recorded.
struct Intent {
    /// The objects absent before the apply: the apply creates them.
    absent: BTreeSet<ObjectRef>,
    /// Whether the inventory was written with them as pending.
    written: bool,
}

/// Before an apply that may create an object, the inventory records it as pending: a crash
/// after the create then still leaves it Flotilla's to prune. Only objects absent now: one
/// that exists is never Flotilla's creation. Nothing to create, nothing written.
async fn record_intent(
    member: &Member,
    to_apply: &[Prepared],
    previous: &Inventory,
    options: &SyncOptions,
    report: &mut ClusterReport,
) -> Result<Intent, ClusterError> {
    let absent = absent_objects(member, to_apply, options)
        .await
        .map_err(ClusterError::Request)?;
    if absent.is_empty() {
        return Ok(Intent {
            absent,
            written: false,
        });
    }
    let mut intent = previous.clone();
    for object_ref in &absent {
        intent
            .entries
            .insert(object_ref.clone(), pending_entry(object_ref));
    }
    report.writes += intent
        .store(member, &options.name)
        .await
        .map_err(ClusterError::Intent)?;
    Ok(Intent {
        absent,
        written: true,
    })
}

/// Applies in waves; on a first sync without a pending write (which made it already), the
/// inventory's namespace is made meanwhile.
async fn apply_with_inventory_namespace(
    member: &Member,
    to_apply: Vec<Prepared>,
    previous: &Inventory,
    next: &mut Inventory,
    report: &mut ClusterReport,
    options: &SyncOptions,
    make_namespace: bool,
) {
    let inventory_namespace = async {
        if make_namespace {
            Some(Inventory::ensure_namespace(member).await)
        } else {
            None
        }
    };
    let ((), namespace_made) = tokio::join!(
        apply_in_waves(member, to_apply, previous, next, report, options),
        inventory_namespace
    );
    if let Some(result) = namespace_made {
        report.writes += 1;
        if let Err(error) = result {
            tracing::debug!(cluster = %member.name, %error, "inventory namespace");
        }
    }
}

/// A failed apply may have created its object all the same (an answer lost on the way): it
/// stays pending, for the next sync to resolve.
fn keep_failed_creations_pending(
    absent: &BTreeSet<ObjectRef>,
    next: &mut Inventory,
    report: &ClusterReport,
) {
    for problem in &report.failed {
        if absent.contains(&problem.object) && !next.entries.contains_key(&problem.object) {
            next.entries
                .insert(problem.object.clone(), pending_entry(&problem.object));
        }
    }
}

/// The inventory entries that left the plan, to prune. Failed applies and plan errors keep
/// their old entry in `next`: still Flotilla's to prune later.
fn leaving_entries<'a>(
    previous: &'a Inventory,
    next: &mut Inventory,
    planned: &BTreeSet<ObjectRef>,
    keep: &BTreeSet<ObjectRef>,
) -> Vec<&'a Entry> {
    let mut leaving = Vec::new();
    for (object_ref, entry) in &previous.entries {
        if next.entries.contains_key(object_ref) {
            continue;
        }
        if planned.contains(object_ref) || is_kept(keep, object_ref) {
            next.entries.insert(object_ref.clone(), entry.clone());
        } else {
            leaving.push(entry);
        }
    }
    leaving
}

/// Writes the inventory; a failure is reported as the inventory ConfigMap's.
async fn store_inventory(
    member: &Member,
    next: &Inventory,
    options: &SyncOptions,
    report: &mut ClusterReport,
) {
    match next.store(member, &options.name).await {
        Ok(writes) => report.writes += writes,
        Err(error) => report.failed.push(ObjectProblem {
            object: ObjectRef {
                group: String::new(),
                version: "v1".into(),
                kind: "ConfigMap".into(),
                namespace: INVENTORY_NAMESPACE.into(),
                name: inventory::config_map_name(&options.name),
            },
            reason: error.to_string(),
            retryable: error.is_retryable(),
        }),
    }
}

/// An inventory entry for an object about to be created: see [`Entry::pending`].
pub(super) fn pending_entry(object_ref: &ObjectRef) -> Entry {
    Entry {
        api_version: object_ref.api_version(),
        kind: object_ref.kind.clone(),
        namespace: object_ref.namespace.clone(),
        name: object_ref.name.clone(),
        hash: String::new(),
        uid: String::new(),
        created: false,
        pending: true,
    }
}

/// Replaces each pending entry by what [`inventory::resolve_pending`] makes of the live object.
pub async fn resolve_pending_entries(
    member: &Member,
    inventory: &mut Inventory,
    options: &SyncOptions,
) -> Result<(), ClusterError> {
    let pending: Vec<Entry> = inventory
        .entries
        .values()
        .filter(|entry| entry.pending)
        .cloned()
        .collect();
    for mut entry in pending {
        inventory.entries.remove(&entry.object_ref());
        let named = entry.object_ref();
        let pending = |source: ObjectError| ClusterError::Pending {
            object: named.clone(),
            source,
        };
        let resource = match member.resource(&entry.api_version, &entry.kind).await {
            Ok(Some(resource)) => resource,
            // Its kind is not served: the object was never created.
            Ok(None) => continue,
            Err(error) => return Err(pending(error.into())),
        };
        // A custom resource was recorded before its kind was known: place it as its apply did.
        let mut object_ref = entry.object_ref();
        fix_ref_namespace(&mut object_ref, &resource);
        entry.namespace = object_ref.namespace.clone();
        let live = match member.get(&object_path(&object_ref, &resource)).await {
            Ok(None) => None,
            Ok(Some(reply)) if reply.status.is_success() => Some(reply.json()),
            Ok(Some(reply)) => {
                return Err(pending(ObjectError::Answered {
                    status: reply.status,
                    message: reply.message(),
                }));
            }
            Err(error) => return Err(pending(error.into())),
        };
        if let Some(resolved) = inventory::resolve_pending(&entry, live.as_ref(), &options.name) {
            inventory.entries.insert(object_ref, resolved);
        }
    }
    Ok(())
}

/// The objects of `to_apply` that do not exist now, so that their apply creates them: one
/// metadata list per kind and namespace tells. A collection that cannot be listed counts as
/// holding its objects: an object wrongly taken as absent could later be pruned although
/// Flotilla did not create it, one wrongly taken as present only loses crash safety.
async fn absent_objects(
    member: &Member,
    to_apply: &[Prepared],
    options: &SyncOptions,
) -> Result<BTreeSet<ObjectRef>, RequestError> {
    let mut absent = BTreeSet::new();
    let mut collections: BTreeMap<String, Vec<&ObjectRef>> = BTreeMap::new();
    for object in to_apply {
        let object_ref = &object.object_ref;
        match &object.resource {
            Some(resource) => {
                let api_version = object_ref.api_version();
                let path = member::collection_path(&api_version, resource, &object_ref.namespace);
                collections.entry(path).or_default().push(object_ref);
            }
            // Its kind is not served yet (its CRD comes in this sync): no such object exists.
            None => {
                absent.insert(object_ref.clone());
            }
        }
    }
    let lists: Vec<_> = collections
        .into_iter()
        .map(|(path, objects)| async move {
            let reply = member.list_metadata(&path).await;
            (path, objects, reply)
        })
        .collect();
    let mut lists = futures::stream::iter(lists).buffer_unordered(options.concurrency.max(1));
    while let Some((path, objects, reply)) = lists.next().await {
        let names: HashSet<String> = match reply? {
            // The namespace's collection is not served (the namespace comes in this sync).
            None => HashSet::new(),
            Some(reply) if reply.status.is_success() => {
                match serde_json::from_slice::<UidList>(&reply.body) {
                    Ok(list) => list
                        .items
                        .into_iter()
                        .flatten()
                        .map(|i| i.metadata.name)
                        .collect(),
                    Err(error) => {
                        tracing::warn!(cluster = %member.name, path, %error, "unreadable list; objects taken as present");
                        continue;
                    }
                }
            }
            Some(reply) => {
                tracing::warn!(cluster = %member.name, path, status = %reply.status, "cannot list; objects taken as present");
                continue;
            }
        };
        absent.extend(
            objects
                .into_iter()
                .filter(|object_ref| !names.contains(&object_ref.name))
                .cloned(),
        );
    }
    Ok(absent)
}

/// The live objects of an unchanged-objects check, by uid (filled only when asked).
type LiveObjects = HashMap<String, Value>;

/// The planned objects that need nothing: same hash as in the inventory, and the object is
/// still there with the uid Flotilla got (one metadata list per kind tells; a full list per
/// kind, with the live objects returned, when `drift` asks to compare them).
async fn unchanged_objects<'a>(
    member: &Member,
    prepared: &[Prepared],
    previous: &'a Inventory,
    options: &SyncOptions,
    drift: Option<DriftMode>,
) -> Result<(HashMap<ObjectRef, &'a Entry>, LiveObjects), RequestError> {
    if options.force {
        return Ok((HashMap::new(), HashMap::new()));
    }
    let candidates: Vec<(&Prepared, &Entry)> = prepared
        .iter()
        .filter_map(|object| {
            let entry = previous.entries.get(&object.object_ref)?;
            (entry.hash == object.hash && object.resource.is_some()).then_some((object, entry))
        })
        .collect();
    // The kinds to list, each once.
    let mut kinds: BTreeMap<(String, String), &Resource> = BTreeMap::new();
    for (object, _) in &candidates {
        if let Some(resource) = &object.resource {
            kinds.insert(
                (
                    object.object_ref.api_version(),
                    object.object_ref.kind.clone(),
                ),
                resource,
            );
        }
    }
    let selector = format!("{INVENTORY_LABEL}={}", options.name);
    let lists = kinds.iter().map(|((api_version, _), resource)| {
        let path = format!(
            "{}?labelSelector={}",
            member::collection_path(api_version, resource, ""),
            percent_encode(&selector)
        );
        async move {
            if drift.is_some() {
                member.get(&path).await
            } else {
                member.list_metadata(&path).await
            }
        }
    });
    // uids are unique in a cluster: the uid alone says the very object is still there.
    let mut live_uids: HashSet<String> = HashSet::new();
    let mut live_objects = LiveObjects::new();
    for reply in futures::future::join_all(lists).await {
        let Some(reply) = reply? else { continue };
        if drift.is_some() {
            // The whole objects, once per agent start, to compare them with what was applied.
            let items = match reply.json().get_mut("items").map(Value::take) {
                Some(Value::Array(items)) => items,
                _ => Vec::new(),
            };
            for item in items {
                if let Some(uid) = item.pointer("/metadata/uid").and_then(Value::as_str) {
                    live_uids.insert(uid.to_string());
                    live_objects.insert(uid.to_string(), item);
                }
            }
        } else if let Ok(list) = serde_json::from_slice::<UidList>(&reply.body) {
            // Only the uids: a JSON tree of thousands of items would cost megabytes per cluster.
            live_uids.extend(
                list.items
                    .into_iter()
                    .flatten()
                    .map(|item| item.metadata.uid),
            );
        }
    }
    let unchanged = candidates
        .into_iter()
        .filter(|(_, entry)| live_uids.contains(&entry.uid))
        .map(|(object, entry)| (object.object_ref.clone(), entry))
        .collect();
    Ok((unchanged, live_objects))
}

/// Percent-encodes a query value (label selectors hold `/` and `=`).
pub(super) fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}
