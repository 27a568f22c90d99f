//! Apply: make each member cluster hold exactly its planned objects.
//!
//! Per cluster, [`sync_cluster`] reads like the reconcile it is:
//! 1. read the cluster's [`Inventory`] (what Flotilla applied there before);
//! 2. prepare every planned object (Flotilla's label, the list-map key defaults 1.20's
//!    server-side apply needs) and hash it;
//! 3. leave alone every object whose hash is the one in the inventory and that still exists
//!    with the uid Flotilla got for it: nothing changed, nothing is sent (an agent's first sync
//!    also compares those with the live objects, see [`sync_cluster_checking`]);
//! 4. record the objects about to be created (absent now) as pending in the inventory, so that
//!    a crash before step 6 still leaves them prunable; then server-side apply the rest in
//!    waves (CRDs, then wait until they are Established; Namespaces; other cluster-scoped
//!    objects; namespaced built-ins; workloads; custom resources), each wave with at most
//!    `concurrency` requests in flight;
//! 5. prune what the inventory holds and the plan no longer does, unless Flotilla did not
//!    create it or it is annotated `flotilla.dev/prune: disabled`;
//! 6. write the inventory back, only when it changed.
//!
//! [`sync_fleet`] runs that for every cluster at once; a dead or slow cluster delays nobody.

pub mod diff;
pub mod inventory;
pub mod member;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use backon::Retryable;
use futures::stream::{FuturesUnordered, StreamExt};
use http::{Method, StatusCode};
use serde::Serialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tracing::Instrument;

pub use inventory::{Entry, INVENTORY_NAMESPACE, Inventory, InventoryError};
pub use member::{Member, RequestError, Resource};

use crate::drift::{Drift, DriftMode};
use crate::kinds;
use crate::object::{Object, ObjectRef, landing_namespace};
use crate::placement::Plan;

/// The field manager of every server-side apply Flotilla sends.
pub const FIELD_MANAGER: &str = "flotilla";
/// The label Flotilla puts on what it applies; its value is the sync's name.
pub const INVENTORY_LABEL: &str = "flotilla.dev/inventory";
/// With the value `disabled`, an object that leaves Git stays in the cluster.
pub const PRUNE_ANNOTATION: &str = "flotilla.dev/prune";

/// How long a CRD may take to become Established before its custom resources are given up.
const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a new CRD is looked at until it is Established and served (until
/// [`ESTABLISH_TIMEOUT`]): it usually is within a few hundred milliseconds.
const ESTABLISH_POLL: backon::ConstantBuilder = backon::ConstantBuilder::new()
    .with_delay(Duration::from_millis(50))
    .without_max_times();

/// A cluster could not be set up for a sync.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The kubeconfig file cannot be read.
    #[error("{}: {problem}", path.display())]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The kubeconfig has no context for a cluster of the fleet.
    #[error("cluster {cluster}: {} has no context named {cluster}", kubeconfig.display())]
    NoContext {
        /// The kubeconfig file.
        kubeconfig: PathBuf,
        /// The cluster.
        cluster: String,
    },
    /// The context exists but no client can be made of it.
    #[error("cluster {cluster}: {}: context {cluster}: {problem}", kubeconfig.display())]
    Client {
        /// The kubeconfig file.
        kubeconfig: PathBuf,
        /// The cluster.
        cluster: String,
        /// What is wrong.
        problem: String,
    },
}

/// How to sync.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// The sync's name: it names the inventory in each cluster and is the value of
    /// [`INVENTORY_LABEL`]. Syncs with different names never prune each other's objects.
    pub name: String,
    /// Requests in flight per cluster.
    pub concurrency: usize,
    /// Apply every object even when its hash says it is unchanged.
    pub force: bool,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            name: "flotilla".into(),
            concurrency: 16,
            force: false,
        }
    }
}

/// How one cluster's sync ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterStatus {
    /// Every object is as planned.
    Synced,
    /// Some objects failed; the rest were applied.
    Degraded,
    /// Nothing could be done: unreachable, no credentials, or an unreadable inventory.
    Failed,
}

/// One object that failed or was left in place, and why.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ObjectProblem {
    /// The object.
    pub object: ObjectRef,
    /// Why.
    pub reason: String,
}

/// What one cluster's sync did.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterReport {
    /// The cluster.
    pub cluster: String,
    /// The outcome.
    pub status: ClusterStatus,
    /// Why the whole cluster failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Objects sent with server-side apply.
    pub applied: Vec<ObjectRef>,
    /// Objects already as planned: nothing was sent.
    pub unchanged: Vec<ObjectRef>,
    /// Objects deleted because they left the plan.
    pub pruned: Vec<ObjectRef>,
    /// Objects that left the plan but stay, and why.
    pub kept: Vec<ObjectProblem>,
    /// Objects that could not be applied or pruned, and why.
    pub failed: Vec<ObjectProblem>,
    /// Drift found by comparing live objects with what Flotilla applied (only when asked, see
    /// [`sync_cluster_checking`]); those not `report_only` were applied again.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<Drift>,
    /// Write requests sent (apply, delete, inventory).
    pub writes: usize,
    /// sha256 of the cluster's applied set after this sync.
    pub set_hash: String,
    /// Wall time of this cluster's sync.
    #[serde(serialize_with = "serialize_seconds")]
    pub duration: Duration,
}

fn serialize_seconds<S: serde::Serializer>(
    duration: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64())
}

impl ClusterReport {
    fn new(cluster: &str) -> Self {
        ClusterReport {
            cluster: cluster.to_string(),
            status: ClusterStatus::Synced,
            error: None,
            applied: Vec::new(),
            unchanged: Vec::new(),
            pruned: Vec::new(),
            kept: Vec::new(),
            failed: Vec::new(),
            drift: Vec::new(),
            writes: 0,
            set_hash: String::new(),
            duration: Duration::ZERO,
        }
    }

    /// The report of a cluster that could not be synced at all.
    pub fn failed(cluster: &str, error: String, duration: Duration) -> Self {
        ClusterReport {
            status: ClusterStatus::Failed,
            error: Some(error),
            duration,
            ..ClusterReport::new(cluster)
        }
    }
}

/// The query of a server-side apply.
pub fn apply_query(dry_run: bool) -> String {
    let mut query = format!("fieldManager={FIELD_MANAGER}&force=true");
    if dry_run {
        query.push_str("&dryRun=All");
    }
    query
}

/// The apply wave of an object: [`crate::kinds::apply_wave`], where the apiserver says the
/// kind's scope (a custom kind's is unknown until its CRD is served).
fn wave(object_ref: &ObjectRef, resource: Option<&Resource>) -> u8 {
    let cluster_scoped = resource.is_some_and(|resource| !resource.namespaced);
    kinds::apply_wave(&object_ref.group, &object_ref.kind, cluster_scoped)
}

/// A planned object, ready to send.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Where it goes: once its kind is known, a namespaced object without a namespace goes to
    /// `default`, as with kubectl.
    pub object_ref: ObjectRef,
    /// The apply body, as compact JSON: a sync of thousands of objects holds strings, not
    /// JSON trees.
    pub body: String,
    /// sha256 of the body.
    pub hash: String,
    /// How the API serves it, when known yet (custom resources wait for their CRD).
    pub resource: Option<Resource>,
}

/// Adds what the apply step adds to a planned object: the inventory label and, when
/// `legacy_forms` (an apiserver before 1.22, see [`Member::needs_legacy_forms`]), the forms
/// that Kubernetes 1.20's server-side apply needs and older clients always sent: the defaults
/// of list-map keys it refuses to find missing ("associative list with keys has an element
/// that omits key field"), as Flux does, and resource quantities as strings (it refuses
/// `gpu: 1` with "expected string"). `render` output stays what Git says.
pub fn prepare_body(object: &Value, sync_name: &str, legacy_forms: bool) -> Value {
    let mut body = object.clone();
    if let Some(metadata) = body.get_mut("metadata").and_then(Value::as_object_mut) {
        let labels = metadata
            .entry("labels")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(labels) = labels.as_object_mut() {
            labels.insert(INVENTORY_LABEL.into(), Value::String(sync_name.into()));
        }
    }
    if legacy_forms {
        add_legacy_forms(&mut body);
    }
    body
}

/// The 1.20 forms of [`prepare_body`].
fn add_legacy_forms(body: &mut Value) {
    let text = |field: &str| {
        body.get(field)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let (kind, api_version) = (text("kind"), text("apiVersion"));
    let (kind, api_version) = (kind.as_str(), api_version.as_str());
    if api_version == "v1" && kind == "Service" {
        default_protocols(body.pointer_mut("/spec/ports"), "port");
    }
    if let Some(pointer) = kinds::workload_of(body).map(|workload| workload.pod_spec)
        && let Some(pod_spec) = body.pointer_mut(pointer)
    {
        for containers in ["containers", "initContainers", "ephemeralContainers"] {
            for container in pod_spec
                .get_mut(containers)
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                default_protocols(container.get_mut("ports"), "containerPort");
                quantities_as_strings(container.pointer_mut("/resources/limits"));
                quantities_as_strings(container.pointer_mut("/resources/requests"));
            }
        }
        quantities_as_strings(pod_spec.get_mut("overhead"));
    }
    let claims: Vec<&mut Value> = match (api_version, kind) {
        ("v1", "PersistentVolumeClaim") => body.get_mut("spec").into_iter().collect(),
        ("apps/v1", "StatefulSet") => body
            .pointer_mut("/spec/volumeClaimTemplates")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
            .filter_map(|template| template.get_mut("spec"))
            .collect(),
        _ => Vec::new(),
    };
    for claim in claims {
        quantities_as_strings(claim.pointer_mut("/resources/requests"));
        quantities_as_strings(claim.pointer_mut("/resources/limits"));
    }
    if (api_version, kind) == ("v1", "ResourceQuota") {
        quantities_as_strings(body.pointer_mut("/spec/hard"));
    }
}

/// Turns the numbers of a map of resource quantities into strings (`1` -> `"1"`).
fn quantities_as_strings(quantities: Option<&mut Value>) {
    for value in quantities
        .and_then(Value::as_object_mut)
        .into_iter()
        .flat_map(|map| map.values_mut())
    {
        if let Value::Number(number) = value {
            *value = Value::String(number.to_string());
        }
    }
}

/// Sets `protocol: TCP` on each port entry that has its key but no protocol.
fn default_protocols(ports: Option<&mut Value>, key: &str) {
    for port in ports
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
    {
        if port.contains_key(key) && !port.contains_key("protocol") {
            port.insert("protocol".into(), Value::String("TCP".into()));
        }
    }
}

fn content_hash(body: &str) -> String {
    inventory::hex(&Sha256::digest(body.as_bytes()))
}

impl Member {
    /// Prepares a planned object for this cluster: body, hash, and how the API serves it.
    pub async fn prepare(
        &self,
        object: &Object,
        sync_name: &str,
    ) -> Result<Prepared, RequestError> {
        let mut object_ref = object.object_ref();
        let legacy_forms = self.needs_legacy_forms().await?;
        let mut body = prepare_body(&object.value, sync_name, legacy_forms);
        let resource = self.resource(object.api_version(), object.kind()).await?;
        fix_namespace(&mut object_ref, &mut body, resource.as_ref());
        let body = body.to_string();
        let hash = content_hash(&body);
        Ok(Prepared {
            object_ref,
            body,
            hash,
            resource,
        })
    }
}

/// A namespaced object without a namespace goes to `default`; a cluster-scoped one has none
/// ([`landing_namespace`], with the scope the apiserver serves).
fn fix_namespace(object_ref: &mut ObjectRef, body: &mut Value, resource: Option<&Resource>) {
    let Some(resource) = resource else { return };
    let Some(metadata) = body.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    if fix_ref_namespace(object_ref, resource) {
        if object_ref.namespace.is_empty() {
            metadata.remove("namespace");
        } else {
            metadata.insert(
                "namespace".into(),
                Value::String(object_ref.namespace.clone()),
            );
        }
    }
}

/// The reference half of [`fix_namespace`]; true when it changed the namespace.
fn fix_ref_namespace(object_ref: &mut ObjectRef, resource: &Resource) -> bool {
    let landing = landing_namespace(&object_ref.namespace, !resource.namespaced);
    if landing == object_ref.namespace {
        return false;
    }
    object_ref.namespace = landing.to_string();
    true
}

/// The URL of one object.
fn object_path(object_ref: &ObjectRef, resource: &Resource) -> String {
    format!(
        "{}/{}",
        member::collection_path(&object_ref.api_version(), resource, &object_ref.namespace),
        object_ref.name
    )
}

/// Syncs every cluster of the plan at once. `members` holds a connected [`Member`] (or the
/// reason there is none) per cluster; `on_done` sees each report as its cluster finishes.
pub async fn sync_fleet(
    plan: &Plan,
    members: &[(String, Result<Member, ApplyError>)],
    options: &SyncOptions,
    mut on_done: impl FnMut(&ClusterReport),
) -> Vec<ClusterReport> {
    let mut running: FuturesUnordered<_> = members
        .iter()
        .map(|(name, member)| async move {
            let started = Instant::now();
            match member {
                Ok(member) => {
                    let desired = plan.desired.get(name).map(Vec::as_slice).unwrap_or(&[]);
                    let keep = kept_by_plan_errors(plan, name);
                    sync_cluster(member, desired, &keep, options)
                        .instrument(cluster_sync_span(name, None))
                        .await
                }
                Err(error) => ClusterReport::failed(name, error.to_string(), started.elapsed()),
            }
        })
        .collect();
    let mut reports = Vec::with_capacity(members.len());
    while let Some(report) = running.next().await {
        on_done(&report);
        reports.push(report);
    }
    reports.sort_by(|a, b| a.cluster.cmp(&b.cluster));
    reports
}

/// The span of one cluster's sync: every log line of it carries the cluster, the commit (when
/// there is one: `sync --once` of a directory has none) and the stage it was in.
pub fn cluster_sync_span(cluster: &str, commit: Option<&str>) -> tracing::Span {
    tracing::info_span!(
        "cluster_sync",
        cluster,
        commit = commit.unwrap_or_default(),
        stage = tracing::field::Empty
    )
}

/// Names the stage of the cluster sync in progress, in its span.
fn enter_stage(stage: &'static str) {
    tracing::Span::current().record("stage", stage);
}

/// Resources the plan could not place or override for a cluster: whatever an earlier sync
/// applied of them stays, since an error in Git must not delete what runs.
pub fn kept_by_plan_errors(plan: &Plan, cluster: &str) -> BTreeSet<ObjectRef> {
    plan.errors
        .iter()
        .filter(|error| error.cluster.as_deref().is_none_or(|c| c == cluster))
        .map(|error| error.resource.clone())
        .collect()
}

/// Whether a plan error keeps this object. The error names the template as written.
pub fn is_kept(keep: &BTreeSet<ObjectRef>, object_ref: &ObjectRef) -> bool {
    keep.iter().any(|kept| kept.is_placed_as(object_ref))
}

/// Syncs one cluster to `desired`. Objects in `keep` are neither applied nor pruned.
pub async fn sync_cluster(
    member: &Member,
    desired: &[impl std::borrow::Borrow<Object>],
    keep: &BTreeSet<ObjectRef>,
    options: &SyncOptions,
) -> ClusterReport {
    sync_cluster_checking(member, desired, keep, options, None).await
}

/// [`sync_cluster`] that, with `drift` set, also compares every object the inventory says is
/// unchanged with the live object (one full list per kind instead of a metadata list), and
/// applies again those that drifted (in [`DriftMode::Correct`], unless annotated
/// `flotilla.dev/drift: report`); every drift found is in the report. An agent does this on
/// its first sync after it starts: drift that happened while no agent ran is seen by no watch.
pub async fn sync_cluster_checking(
    member: &Member,
    desired: &[impl std::borrow::Borrow<Object>],
    keep: &BTreeSet<ObjectRef>,
    options: &SyncOptions,
    drift: Option<DriftMode>,
) -> ClusterReport {
    let started = Instant::now();
    let mut report = ClusterReport::new(&member.name);
    enter_stage("inventory");
    let (mut previous, first_sync) = match Inventory::load(member, &options.name).await {
        Ok(Some(inventory)) => (inventory, false),
        Ok(None) => (Inventory::default(), true),
        Err(error) => {
            return ClusterReport::failed(&member.name, error.to_string(), started.elapsed());
        }
    };
    // An earlier sync died (or failed to write its inventory) after recording what it was
    // about to create: find out what it did create before anything else.
    let recovered = previous.has_pending();
    if recovered && let Err(error) = resolve_pending_entries(member, &mut previous, options).await {
        return ClusterReport::failed(&member.name, error, started.elapsed());
    }

    let mut prepared = Vec::with_capacity(desired.len());
    for object in desired {
        match member.prepare(object.borrow(), &options.name).await {
            Ok(object) => prepared.push(object),
            Err(error) => {
                return ClusterReport::failed(&member.name, error.to_string(), started.elapsed());
            }
        }
    }

    let planned: BTreeSet<ObjectRef> = prepared.iter().map(|o| o.object_ref.clone()).collect();
    let mut next = Inventory::default();
    enter_stage("compare");
    let to_apply = match unchanged_objects(member, &prepared, &previous, options, drift).await {
        Ok((unchanged, live)) => {
            let mut to_apply = Vec::new();
            for object in prepared {
                if let Some(entry) = unchanged.get(&object.object_ref) {
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
                } else {
                    to_apply.push(object);
                }
            }
            to_apply
        }
        Err(error) => {
            return ClusterReport::failed(&member.name, error.to_string(), started.elapsed());
        }
    };

    tracing::debug!(
        cluster = %member.name,
        unchanged = report.unchanged.len(),
        to_apply = to_apply.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "compared with the inventory"
    );
    // Before an apply that may create an object, the inventory records it as pending: a crash
    // after the create then still leaves it Flotilla's to prune. Only objects absent now: one
    // that exists is never Flotilla's creation. Nothing to create, nothing written.
    enter_stage("apply");
    let absent = match absent_objects(member, &to_apply, options).await {
        Ok(absent) => absent,
        Err(error) => {
            return ClusterReport::failed(&member.name, error.to_string(), started.elapsed());
        }
    };
    let intent_written = !absent.is_empty();
    if intent_written {
        let mut intent = previous.clone();
        for object_ref in &absent {
            intent
                .entries
                .insert(object_ref.clone(), pending_entry(object_ref));
        }
        match intent.store(member, &options.name).await {
            Ok(writes) => report.writes += writes,
            Err(error) => {
                let error = format!("recording the objects about to be created: {error}");
                return ClusterReport::failed(&member.name, error, started.elapsed());
            }
        }
    }
    // On a first sync, the inventory's namespace is made while the objects are applied (the
    // pending inventory's write made it already when there is one).
    let inventory_namespace = async {
        if first_sync && !intent_written {
            Some(Inventory::ensure_namespace(member).await)
        } else {
            None
        }
    };
    let ((), namespace_made) = tokio::join!(
        apply_in_waves(member, to_apply, &previous, &mut next, &mut report, options),
        inventory_namespace
    );
    if let Some(result) = namespace_made {
        report.writes += 1;
        if let Err(error) = result {
            tracing::debug!(cluster = %member.name, %error, "inventory namespace");
        }
    }

    // A failed apply may have created its object all the same (an answer lost on the way):
    // it stays pending, for the next sync to resolve.
    for problem in &report.failed {
        if absent.contains(&problem.object) && !next.entries.contains_key(&problem.object) {
            next.entries
                .insert(problem.object.clone(), pending_entry(&problem.object));
        }
    }

    // Prune what the plan no longer holds for this cluster.
    let leaving: Vec<&Entry> = previous
        .entries
        .iter()
        .filter(|(object_ref, _)| !next.entries.contains_key(*object_ref))
        .filter(|(object_ref, _)| {
            // Failed applies and plan errors keep their old entry: still Flotilla's to prune.
            !planned.contains(*object_ref) && !is_kept(keep, object_ref)
        })
        .map(|(_, entry)| entry)
        .collect();
    for (object_ref, entry) in &previous.entries {
        if !next.entries.contains_key(object_ref)
            && (planned.contains(object_ref) || is_kept(keep, object_ref))
        {
            next.entries.insert(object_ref.clone(), entry.clone());
        }
    }
    enter_stage("prune");
    prune(member, leaving, &mut next, &mut report, &options.name).await;

    tracing::debug!(
        cluster = %member.name,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "applied and pruned"
    );
    report.set_hash = next.set_hash();
    enter_stage("record");
    if next != previous || recovered || intent_written {
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
            }),
        }
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

/// An inventory entry for an object about to be created: see [`Entry::pending`].
fn pending_entry(object_ref: &ObjectRef) -> Entry {
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
pub(crate) async fn resolve_pending_entries(
    member: &Member,
    inventory: &mut Inventory,
    options: &SyncOptions,
) -> Result<(), String> {
    let pending: Vec<Entry> = inventory
        .entries
        .values()
        .filter(|entry| entry.pending)
        .cloned()
        .collect();
    for mut entry in pending {
        inventory.entries.remove(&entry.object_ref());
        let named = entry.object_ref().to_string();
        let context = |problem: String| format!("{named} (pending in the inventory): {problem}");
        let resource = match member.resource(&entry.api_version, &entry.kind).await {
            Ok(Some(resource)) => resource,
            // Its kind is not served: the object was never created.
            Ok(None) => continue,
            Err(error) => return Err(context(error.to_string())),
        };
        // A custom resource was recorded before its kind was known: place it as its apply did.
        let mut object_ref = entry.object_ref();
        fix_ref_namespace(&mut object_ref, &resource);
        entry.namespace = object_ref.namespace.clone();
        let live = match member.get(&object_path(&object_ref, &resource)).await {
            Ok(None) => None,
            Ok(Some(reply)) if reply.status.is_success() => Some(reply.json()),
            Ok(Some(reply)) => {
                let problem = format!("{} {}", reply.status.as_u16(), reply.message());
                return Err(context(problem));
            }
            Err(error) => return Err(context(error.to_string())),
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
fn percent_encode(value: &str) -> String {
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

/// Applies `objects` wave by wave; records results in `report` and `next`.
async fn apply_in_waves(
    member: &Member,
    objects: Vec<Prepared>,
    previous: &Inventory,
    next: &mut Inventory,
    report: &mut ClusterReport,
    options: &SyncOptions,
) {
    let mut waves: BTreeMap<u8, Vec<Prepared>> = BTreeMap::new();
    for object in objects {
        waves
            .entry(wave(&object.object_ref, object.resource.as_ref()))
            .or_default()
            .push(object);
    }
    for (wave, objects) in waves {
        let results: Vec<(Prepared, Result<Applied, ApplyFailure>)> =
            futures::stream::iter(objects.into_iter().map(|object| async move {
                let result = apply_one(member, &object, false).await;
                (object, result)
            }))
            .buffer_unordered(options.concurrency.max(1))
            .collect()
            .await;
        tracing::debug!(cluster = %member.name, wave, objects = results.len(), "wave applied");
        let mut established = Vec::new();
        for (object, result) in results {
            match result {
                Ok(applied) => {
                    report.writes += 1;
                    let object_ref = applied.object_ref;
                    let created = applied.created
                        || previous
                            .entries
                            .get(&object_ref)
                            .is_some_and(|entry| entry.created && entry.uid == applied.uid);
                    next.entries.insert(
                        object_ref.clone(),
                        Entry {
                            api_version: object_ref.api_version(),
                            kind: object_ref.kind.clone(),
                            namespace: object_ref.namespace.clone(),
                            name: object_ref.name.clone(),
                            hash: applied.hash,
                            uid: applied.uid,
                            created,
                            pending: false,
                        },
                    );
                    if wave == 0 {
                        established.push(object_ref.name.clone());
                    }
                    report.applied.push(object_ref);
                }
                Err(failure) => {
                    report.writes += usize::from(failure.sent);
                    report.failed.push(ObjectProblem {
                        object: object.object_ref,
                        reason: failure.reason,
                    })
                }
            }
        }
        for crd in established {
            if let Err(reason) = member.wait_established(&crd).await {
                report.failed.push(ObjectProblem {
                    object: ObjectRef {
                        group: "apiextensions.k8s.io".into(),
                        version: "v1".into(),
                        kind: "CustomResourceDefinition".into(),
                        namespace: String::new(),
                        name: crd,
                    },
                    reason,
                });
            }
        }
    }
}

/// Why one apply failed.
#[derive(Debug)]
pub struct ApplyFailure {
    /// The reason, for the report.
    pub reason: String,
    /// Whether the request reached the apiserver (it counts as a write sent).
    pub sent: bool,
}

impl ApplyFailure {
    fn unsent(reason: String) -> Self {
        ApplyFailure {
            reason,
            sent: false,
        }
    }
}

/// The result of one server-side apply.
#[derive(Debug)]
pub struct Applied {
    /// Where it went (a custom resource's namespace is known only once its kind is served).
    pub object_ref: ObjectRef,
    /// sha256 of the body sent.
    pub hash: String,
    /// Whether the apply created the object (201).
    pub created: bool,
    /// The object's uid.
    pub uid: String,
    /// The object as the apiserver returned it, for a dry-run (else `Null`).
    pub live: Value,
}

#[derive(serde::Deserialize)]
struct UidList {
    /// `null` in an empty metadata list.
    #[serde(default)]
    items: Option<Vec<UidOnly>>,
}

#[derive(serde::Deserialize)]
struct UidOnly {
    metadata: UidOnlyMetadata,
}

#[derive(serde::Deserialize)]
struct UidOnlyMetadata {
    #[serde(default)]
    uid: String,
    #[serde(default)]
    name: String,
}

/// Server-side applies one object (dry-run when asked).
pub async fn apply_one(
    member: &Member,
    object: &Prepared,
    dry_run: bool,
) -> Result<Applied, ApplyFailure> {
    let resolved;
    let resolved_here = object.resource.is_none();
    let (object_ref, body, resource) = match &object.resource {
        Some(resource) => (&object.object_ref, &object.body, resource.clone()),
        None => {
            // A custom resource whose CRD came in this sync: discover it now.
            let api_version = object.object_ref.api_version();
            match member.resource(&api_version, &object.object_ref.kind).await {
                Ok(Some(resource)) => {
                    let mut object_ref = object.object_ref.clone();
                    let mut body: Value = serde_json::from_str(&object.body)
                        .map_err(|error| ApplyFailure::unsent(error.to_string()))?;
                    fix_namespace(&mut object_ref, &mut body, Some(&resource));
                    resolved = (object_ref, body.to_string());
                    (&resolved.0, &resolved.1, resource)
                }
                Ok(None) => {
                    return Err(ApplyFailure::unsent(format!(
                        "the cluster does not serve kind {} of {api_version} (is its CRD installed?)",
                        object.object_ref.kind
                    )));
                }
                Err(error) => return Err(ApplyFailure::unsent(error.to_string())),
            }
        }
    };
    let path = format!(
        "{}?{}",
        object_path(object_ref, &resource),
        apply_query(dry_run)
    );
    let hash = if resolved_here {
        content_hash(body)
    } else {
        object.hash.clone()
    };
    let reply = if dry_run {
        member.apply_patch(&path, body.as_bytes()).await
    } else {
        member
            .apply_patch_for_metadata(&path, body.as_bytes())
            .await
    }
    .map_err(|error| ApplyFailure {
        // An overloaded apiserver did answer: the request was sent.
        sent: matches!(error, RequestError::Overloaded { .. }),
        reason: error.to_string(),
    })?;
    if !reply.status.is_success() {
        return Err(ApplyFailure {
            reason: format!("{} {}", reply.status.as_u16(), reply.message()),
            sent: true,
        });
    }
    // A sync needs only the uid: reading just that keeps a sync of thousands of objects from
    // building a JSON tree per answer.
    let (uid, live) = if dry_run {
        let live = reply.json();
        let uid = live.pointer("/metadata/uid").and_then(Value::as_str);
        (uid.unwrap_or_default().to_string(), live)
    } else {
        let uid = serde_json::from_slice::<UidOnly>(&reply.body)
            .map(|answer| answer.metadata.uid)
            .unwrap_or_default();
        (uid, Value::Null)
    };
    Ok(Applied {
        object_ref: object_ref.clone(),
        hash,
        created: reply.status == StatusCode::CREATED,
        uid,
        live,
    })
}

impl Member {
    /// Waits until a CRD is Established and discovery lists its kind in every served version,
    /// so that its custom resources, applied next, are found.
    async fn wait_established(&self, crd: &str) -> Result<(), String> {
        /// Why one look at the CRD did not end the wait.
        enum Waiting {
            /// Not Established or not served yet: look again.
            NotYet,
            /// The CRD could not be read (after the request's own retries): give up.
            Failed(String),
        }
        let path = format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd}");
        let deadline = tokio::time::Instant::now() + ESTABLISH_TIMEOUT;
        let look = || async {
            let reply = self
                .get(&path)
                .await
                .map_err(|error| Waiting::Failed(error.to_string()))?;
            match reply.map(|reply| reply.json()) {
                Some(crd) if is_established(&crd) && self.serves_every_version(&crd).await => {
                    Ok(())
                }
                _ => Err(Waiting::NotYet),
            }
        };
        look.retry(ESTABLISH_POLL)
            .sleep(tokio::time::sleep)
            .when(|waiting| {
                matches!(waiting, Waiting::NotYet) && tokio::time::Instant::now() <= deadline
            })
            .await
            .map_err(|waiting| match waiting {
                Waiting::Failed(error) => error,
                Waiting::NotYet => format!(
                    "not Established and served after {} s",
                    ESTABLISH_TIMEOUT.as_secs()
                ),
            })
    }

    /// Whether discovery lists the CRD's kind in each version it serves.
    async fn serves_every_version(&self, crd: &Value) -> bool {
        let group = crd.pointer("/spec/group").and_then(Value::as_str);
        let kind = crd.pointer("/spec/names/kind").and_then(Value::as_str);
        let (Some(group), Some(kind)) = (group, kind) else {
            return false;
        };
        for version in crd
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|version| version.get("served") == Some(&json!(true)))
            .filter_map(|version| version.get("name").and_then(Value::as_str))
        {
            let api_version = format!("{group}/{version}");
            if !matches!(self.resource(&api_version, kind).await, Ok(Some(_))) {
                return false;
            }
        }
        true
    }
}

fn is_established(crd: &Value) -> bool {
    crd.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|condition| {
            condition.get("type") == Some(&json!("Established"))
                && condition.get("status") == Some(&json!("True"))
        })
}

/// Deletes the objects that left the plan, newest wave first (custom resources before their
/// CRD, namespaced objects before their Namespace).
async fn prune(
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
                report.kept.push(ObjectProblem {
                    object: object_ref,
                    reason,
                });
            }
            Err(reason) => {
                report.failed.push(ObjectProblem {
                    object: object_ref.clone(),
                    reason,
                });
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
) -> Result<PruneCheck, String> {
    let resource = match member.resource(&entry.api_version, &entry.kind).await {
        Ok(Some(resource)) => resource,
        // The kind is not served any more (its CRD was deleted): so is the object.
        Ok(None) => return Ok(PruneCheck::Gone),
        Err(error) => return Err(error.to_string()),
    };
    let path = object_path(&entry.object_ref(), &resource);
    let Some(reply) = member.get(&path).await.map_err(|e| e.to_string())? else {
        return Ok(PruneCheck::Gone);
    };
    if !reply.status.is_success() {
        return Err(format!("{} {}", reply.status.as_u16(), reply.message()));
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
) -> Result<PruneOutcome, String> {
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
        .await
        .map_err(|error| error.to_string())?;
    match reply.status {
        status if status.is_success() => Ok(PruneOutcome::Deleted),
        StatusCode::NOT_FOUND => Ok(PruneOutcome::Gone),
        status => Err(format!("{} {}", status.as_u16(), reply.message())),
    }
}

#[cfg(test)]
mod tests;
