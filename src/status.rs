//! The `/status` schema: what the agent serves and what `flotilla status` reads.
//!
//! The agent writes it (see `crate::agent`), the server serves it as JSON, and the CLI
//! deserializes the same types. Every struct reads with defaults, so a `flotilla status` of one
//! version reads an agent of another: a field it does not know is ignored, a field the agent
//! does not send is empty.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::apply::{ClusterStatus, ObjectProblem};
use crate::drift::Drift;
use crate::placement::Target;
use crate::workload::WorkloadHealth;

/// What `/status` shows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Status {
    /// The newest commit handed to the workers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Whether every cluster has synced successfully at least once.
    pub ready: bool,
    /// The last fetch, render or place error; cleared by the next good commit (a fetch error
    /// also by the next good fetch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Where `error` happened: `fetch`, `checkout`, `render` or `place`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_stage: Option<String>,
    /// Resources of the current commit that could not be placed or overridden for some
    /// cluster; the rest of the commit is applied, and whatever ran of them stays.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resource_errors: Vec<String>,
    /// This replica's identity, when replicas share clusters through Leases.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    /// The shards this replica holds, when replicas share clusters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shards: Option<Vec<u32>>,
    /// Why this replica cannot hold shard Leases now; it syncs nothing meanwhile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_error: Option<String>,
    /// Divided resources whose replicas moved off NotReady clusters.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failovers: Vec<FailoverView>,
    /// Per cluster, its health, last sync, workloads and drift.
    pub clusters: BTreeMap<String, ClusterView>,
}

/// A failover in `/status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FailoverView {
    /// The resource.
    pub resource: String,
    /// The NotReady clusters its replicas moved off, with why they are NotReady.
    pub unavailable: BTreeMap<String, String>,
    /// The division in force now.
    pub targets: Vec<Target>,
    /// The planned division, restored when the clusters are Ready again.
    pub planned: Vec<Target>,
}

/// A cluster's readiness from its `/readyz` probes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Readiness {
    /// Not enough probes failed in a row (a new cluster starts here).
    #[default]
    Ready,
    /// `failure_threshold` probes failed in a row; Divided replicas fail over.
    NotReady,
}

/// One cluster in `/status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterView {
    /// Ready or NotReady, from the probes.
    pub health: Readiness,
    /// Why it is NotReady.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_reason: Option<String>,
    /// Whether this replica syncs it (false when another replica holds its shard).
    pub synced_here: bool,
    /// `synced`, `degraded` or `failed`; none before the first sync.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<ClusterStatus>,
    /// The commit it was last synced to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Objects applied, unchanged and pruned in the last sync.
    pub applied: usize,
    /// See `applied`.
    pub unchanged: usize,
    /// See `applied`.
    pub pruned: usize,
    /// Objects that failed, and why.
    pub failed: Vec<ObjectProblem>,
    /// Unix time of the last sync.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_sync: Option<f64>,
    /// Unix time of the last successful sync.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_success: Option<f64>,
    /// The latest drift seen (newest last), with whether it was corrected.
    pub drift: Vec<DriftView>,
    /// Workloads and custom resources with a health rule, by object: Progressing,
    /// Available or Degraded, from their status.
    pub workloads: BTreeMap<String, WorkloadHealth>,
}

/// One drift in `/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DriftView {
    /// What drifted.
    #[serde(flatten)]
    pub drift: Drift,
    /// Whether Flotilla re-applied the object.
    pub corrected: bool,
    /// Unix time it was seen.
    pub seen: f64,
}

/// Drift entries kept per cluster in `/status`.
pub const DRIFT_SHOWN: usize = 20;
