//! Apply: make each member cluster hold exactly its planned objects.
//!
//! Per cluster, [`apply_cluster`] tells the story (see `cluster.rs`): read the inventory, prepare
//! each object, compare with what was applied, record what is about to be created, apply in
//! waves, prune what left the plan, write the inventory back. The steps live by concern:
//! `prepare.rs` (an object made ready for one apiserver), `write.rs` (server-side apply, waves,
//! CRDs), `prune.rs` (deleting only what Flotilla created), [`inventory`] (what was applied),
//! [`member`] (the cluster's client), [`diff`] (`flotilla diff`).
//!
//! [`apply_fleet`] runs that for every cluster at once (`sync --once`); a dead or slow cluster
//! delays nobody. The agent runs it per cluster, in each cluster's worker.

mod cluster;
pub mod diff;
pub mod inventory;
pub mod member;
mod prepare;
mod prune;
mod write;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use http::StatusCode;
use serde::Serialize;
use tracing::Instrument;

pub use cluster::{apply_cluster, resolve_pending_entries};
pub use inventory::{Entry, INVENTORY_NAMESPACE, Inventory, InventoryError};
pub use member::{Member, RequestError, Resource};
pub use prepare::{Prepared, apply_query, prepare_body};
pub use prune::{PruneCheck, prune_check};
pub use write::{Applied, ApplyFailure, apply_one};

use crate::drift::Drift;
use crate::object::ObjectRef;
use crate::placement::Plan;

/// The field manager of every server-side apply Flotilla sends.
pub const FIELD_MANAGER: &str = "flotilla";
/// The label Flotilla puts on what it applies; its value is the sync's name.
pub const INVENTORY_LABEL: &str = "flotilla.dev/inventory";
/// With the value `disabled`, an object that leaves Git stays in the cluster.
pub const PRUNE_ANNOTATION: &str = "flotilla.dev/prune";

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
    /// Whether syncing again can help (a timeout can pass; a refused object stays refused
    /// until the next commit).
    #[serde(skip)]
    pub retryable: bool,
}

impl ObjectProblem {
    /// An object that failed with `error`.
    pub fn failed(object: ObjectRef, error: &ObjectError) -> Self {
        ObjectProblem {
            object,
            reason: error.to_string(),
            retryable: error.is_retryable(),
        }
    }

    /// An object left in place on purpose, for `reason`.
    pub fn kept(object: ObjectRef, reason: String) -> Self {
        ObjectProblem {
            object,
            reason,
            retryable: false,
        }
    }
}

/// Why one object could not be applied, resolved or pruned.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// No answer, or an apiserver that kept failing.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The apiserver answered the object's request with an error.
    #[error("{} {message}", status.as_u16())]
    Answered {
        /// The answer's code.
        status: StatusCode,
        /// The answer's message.
        message: String,
    },
    /// The cluster does not serve the object's kind.
    #[error("the cluster does not serve kind {kind} of {api_version} (is its CRD installed?)")]
    NotServed {
        /// The object's apiVersion.
        api_version: String,
        /// Its kind.
        kind: String,
    },
    /// A CRD did not become Established and served in time.
    #[error("not Established and served after {seconds} s")]
    NotEstablished {
        /// How long Flotilla waited.
        seconds: u64,
    },
    /// The prepared body could not be read back (it is JSON Flotilla wrote).
    #[error("{0}")]
    Body(#[source] serde_json::Error),
}

impl ObjectError {
    /// Whether applying again can help: an object the apiserver refuses as invalid (400, 422)
    /// stays refused until Git changes it; a timeout, an overloaded or unreachable apiserver,
    /// a kind or namespace that is not there yet can pass.
    pub fn is_retryable(&self) -> bool {
        match self {
            ObjectError::Request(error) => error.is_retryable(),
            ObjectError::Answered { status, .. } => is_retryable_status(*status),
            ObjectError::NotServed { .. } | ObjectError::NotEstablished { .. } => true,
            ObjectError::Body(_) => false,
        }
    }

    /// A fixed name for this error, fit for a metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            ObjectError::Request(error) => error.kind(),
            ObjectError::Answered { status, .. } if !is_retryable_status(*status) => "invalid",
            ObjectError::Answered { .. } => "refused",
            ObjectError::NotServed { .. } => "not_served",
            ObjectError::NotEstablished { .. } => "not_established",
            ObjectError::Body(_) => "body",
        }
    }
}

/// Whether an apiserver's error answer can change on its own: everything but a request it
/// finds malformed or invalid.
pub fn is_retryable_status(status: StatusCode) -> bool {
    !matches!(
        status,
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY
    )
}

/// Why a cluster could not be synced at all; nothing was applied or pruned.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The cluster could not be connected to (kubeconfig, context, credentials).
    #[error("{problem}")]
    Connect {
        /// What went wrong.
        problem: String,
        /// Whether trying again can help.
        retryable: bool,
    },
    /// The inventory could not be read.
    #[error("{0}")]
    Inventory(#[source] InventoryError),
    /// An object an earlier sync was about to create could not be looked up.
    #[error("{object} (pending in the inventory): {source}")]
    Pending {
        /// The object.
        object: ObjectRef,
        /// Why.
        #[source]
        source: ObjectError,
    },
    /// The apiserver could not be asked what it serves or holds.
    #[error("{0}")]
    Request(#[source] RequestError),
    /// The objects about to be created could not be recorded first.
    #[error("recording the objects about to be created: {0}")]
    Intent(#[source] InventoryError),
}

impl ClusterError {
    /// Whether syncing again can help.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClusterError::Connect { retryable, .. } => *retryable,
            ClusterError::Inventory(error) | ClusterError::Intent(error) => error.is_retryable(),
            ClusterError::Pending { source, .. } => source.is_retryable(),
            ClusterError::Request(error) => error.is_retryable(),
        }
    }

    /// A fixed name for this error, fit for a metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            ClusterError::Connect { .. } => "connect",
            ClusterError::Inventory(_) => "inventory",
            ClusterError::Pending { .. } => "pending",
            ClusterError::Request(_) => "request",
            ClusterError::Intent(_) => "intent",
        }
    }
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
    /// [`apply_cluster`]); those not `report_only` were applied again.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<Drift>,
    /// Write requests sent (apply, delete, inventory).
    pub writes: usize,
    /// sha256 of the cluster's applied set after this sync.
    pub set_hash: String,
    /// Wall time of this cluster's sync.
    #[serde(serialize_with = "serialize_seconds")]
    pub duration: Duration,
    /// Whether `error` can pass by itself (see [`ClusterError::is_retryable`]).
    #[serde(skip)]
    pub error_retryable: bool,
}

fn serialize_seconds<S: serde::Serializer>(
    duration: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64())
}

impl ClusterReport {
    /// The report of a sync that has found nothing wrong yet: synced, nothing done.
    pub fn new(cluster: &str) -> Self {
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
            error_retryable: false,
        }
    }

    /// The report of a cluster that could not be synced at all.
    pub fn failed(cluster: &str, error: &ClusterError, duration: Duration) -> Self {
        ClusterReport {
            status: ClusterStatus::Failed,
            error: Some(error.to_string()),
            error_retryable: error.is_retryable(),
            duration,
            ..ClusterReport::new(cluster)
        }
    }

    /// Whether syncing again can help: the cluster failed for a reason that can pass, or an
    /// object did. A sync whose only failures are refused objects waits for the next commit.
    pub fn retryable(&self) -> bool {
        match self.status {
            ClusterStatus::Synced => false,
            ClusterStatus::Failed => self.error_retryable,
            ClusterStatus::Degraded => self.failed.iter().any(|problem| problem.retryable),
        }
    }
}

/// Applies every cluster's desired set of `plan` at once (`sync --once`). `members` holds a
/// connected [`Member`] (or the reason there is none) per cluster; `on_done` sees each report
/// as its cluster finishes.
pub async fn apply_fleet(
    plan: &Plan,
    commit: Option<&str>,
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
                    apply_cluster(member, desired, &keep, options, None)
                        .instrument(cluster_sync_span(name, commit))
                        .await
                }
                Err(error) => {
                    let error = ClusterError::Connect {
                        problem: error.to_string(),
                        retryable: false,
                    };
                    ClusterReport::failed(name, &error, started.elapsed())
                }
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

/// The span of one cluster's sync: every log line of it carries the cluster, the commit and
/// the [`Stage`] it was in.
pub fn cluster_sync_span(cluster: &str, commit: Option<&str>) -> tracing::Span {
    tracing::info_span!(
        "cluster_sync",
        cluster,
        commit = commit.unwrap_or_default(),
        stage = tracing::field::Empty
    )
}

/// The stages of a cluster's sync, as its span names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Reading the inventory (and resolving what an earlier sync was about to create).
    Inventory,
    /// Comparing the desired objects with the inventory and the live objects.
    Compare,
    /// Recording what is about to be created, and applying.
    Apply,
    /// Deleting what left the plan.
    Prune,
    /// Writing the inventory back.
    Record,
}

impl Stage {
    /// The stage's name in the span.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Inventory => "inventory",
            Stage::Compare => "compare",
            Stage::Apply => "apply",
            Stage::Prune => "prune",
            Stage::Record => "record",
        }
    }
}

/// Names the stage of the cluster sync in progress, in its span.
fn enter_stage(stage: Stage) {
    tracing::Span::current().record("stage", stage.as_str());
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

#[cfg(test)]
mod tests;
