//! The agent: a reconcile loop that follows the source, and one worker per member cluster.
//!
//! The loop fetches on each poll or webhook trigger. A new commit is checked out, rendered and
//! placed, and each cluster's worker is handed its desired objects; the same commit does
//! nothing. A commit that fails to load, render or place is handed to nobody: the last good
//! state stays, and the error shows in status, logs and metrics.
//!
//! A worker syncs its cluster whenever it is handed new objects, retries with backoff while
//! its cluster fails, and watches the kinds it manages for drift (see [`crate::drift`]),
//! correcting or reporting it, and for workload health. A dead or slow cluster only ever holds
//! up its own worker.
//!
//! Every cluster is probed (see [`crate::cluster::health`]); while one is NotReady, the commit is
//! planned again with its Divided replicas failed over to the others. With several replicas,
//! a replica runs workers only for the clusters of the shards it holds (see [`crate::cluster::lease`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::Instrument;

use serde::Serialize;
use tokio::sync::{Notify, RwLock, mpsc, watch};

use crate::apply::{
    ClusterReport, ClusterStatus, Member, ObjectProblem, SyncOptions, apply_one,
    kept_by_plan_errors, sync_cluster, sync_cluster_checking,
};
use crate::cluster::capacity::{CapacityReport, allocatable_changed, probe_capacity};
use crate::cluster::health::{HealthChange, HealthSettings, probe_cluster};
use crate::cluster::hub::{Hub, MemberCredentials};
use crate::cluster::lease::{LeaseHandle, Ownership};
use crate::cluster::watch::{WatchReport, WatchedKind, Watches, watch_kinds};
use crate::drift::{Drift, DriftMode};
use crate::metrics::Metrics;
use crate::object::{Object, ObjectRef};
use crate::placement::types::SecretKeyRef;
use crate::placement::{self, Plan, Target};
use crate::render;
use crate::source::GitSource;
use crate::workload::{HEALTH_STATES, WorkloadHealth};

/// Where the fleet repo comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A Git repository.
    Git(GitSource),
    /// A directory on disk (development): re-synced on every trigger.
    Directory(PathBuf),
}

/// How the agent runs.
#[derive(Clone)]
pub struct AgentConfig {
    /// The fleet repo.
    pub source: Source,
    /// The fleet path inside the repo (`.` for its root).
    pub repo_path: PathBuf,
    /// The member clusters' credentials; read again when a worker reconnects.
    pub credentials: MemberCredentials,
    /// The hub, for Events (and the Secrets and Leases, set up by the caller).
    pub hub: Option<Hub>,
    /// Cluster probing and failover.
    pub health: HealthSettings,
    /// How often to poll without a trigger.
    pub interval: Duration,
    /// How to sync.
    pub sync: SyncOptions,
    /// What to do about drift.
    pub drift: DriftMode,
    /// Limits of each commit's render.
    pub limits: crate::limits::RenderLimits,
}

/// What `/status` shows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    /// The newest commit handed to the workers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Whether every cluster has synced successfully at least once.
    pub ready: bool,
    /// The last fetch, render or place error; cleared by the next good commit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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
#[derive(Debug, Clone, Serialize)]
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub enum Readiness {
    /// Not enough probes failed in a row (a new cluster starts here).
    #[default]
    Ready,
    /// `failure_threshold` probes failed in a row; Divided replicas fail over.
    NotReady,
}

/// One cluster in `/status`.
#[derive(Debug, Clone, Default, Serialize)]
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
#[derive(Debug, Clone, Serialize)]
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
const DRIFT_SHOWN: usize = 20;

/// What the loop, the workers and the HTTP server share.
pub struct Shared {
    /// The status.
    pub status: RwLock<Status>,
    /// Wakes the loop; triggers that come while it works coalesce into one more round.
    pub trigger: Notify,
    /// The metrics.
    pub metrics: Metrics,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// One cluster's desired state, as handed to its worker.
struct Desired {
    commit: String,
    /// Where the hub keeps the cluster's kubeconfig.
    secret: Option<SecretKeyRef>,
    first_seen: Instant,
    /// Shared between clusters where equal: most objects are the same in every cluster.
    objects: Vec<Arc<Object>>,
    keep: BTreeSet<ObjectRef>,
    /// Set once commit-to-applied latency was recorded for this cluster.
    latency_recorded: std::sync::atomic::AtomicBool,
}

/// Runs the loop until `shutdown` fires; then stops the workers and releases the Leases, so
/// another replica takes over at once.
pub async fn run(
    config: AgentConfig,
    shared: Arc<Shared>,
    leases: Option<LeaseHandle>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let config = Arc::new(config);
    let (health_tx, mut health_rx) = mpsc::channel::<HealthChange>(64);
    let mut ownership = leases.as_ref().map(|handle| handle.ownership.clone());
    if let Some(handle) = &leases {
        shared.status.write().await.replica = Some(handle.identity.clone());
    }
    let (capacity_tx, mut capacity_rx) = mpsc::channel::<CapacityReport>(64);
    let mut state = LoopState::new(health_tx, capacity_tx, leases);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        reconcile(&config, &shared, &mut state).await;
        // After a failed fetch, retry sooner: 1 s doubling up to the poll interval.
        let interval = config.interval.max(Duration::from_secs(1));
        let wait = match state.fetch_failures {
            0 => interval,
            n => Duration::from_secs(1 << (n - 1).min(10)).min(interval),
        };
        let sleep = tokio::time::sleep(wait);
        let mut sleep = std::pin::pin!(sleep);
        // Health and ownership changes are handled without waiting for the next round.
        loop {
            let ownership_changed = async {
                match ownership.as_mut() {
                    Some(receiver) => receiver.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = &mut sleep => break,
                () = shared.trigger.notified() => break,
                Some(change) = health_rx.recv() => {
                    if cluster_health_changed(&config, &shared, &mut state, change).await {
                        // Plan the same commit again, with or without the failover.
                        state.replan = true;
                        break;
                    }
                }
                Some(report) = capacity_rx.recv() => {
                    if capacity_changed(&mut state, report) {
                        state.replan = true;
                        break;
                    }
                }
                true = ownership_changed => {
                    dispatch(&config, &shared, &mut state).await;
                }
                () = &mut shutdown => {
                    state.stopping = true;
                    dispatch(&config, &shared, &mut state).await;
                    if let Some(handle) = state.leases.take() {
                        handle.release().await;
                    }
                    return;
                }
            }
        }
    }
}

struct LoopState {
    /// The commit last handed to the workers.
    planned_commit: Option<String>,
    /// When the newest commit was first seen, for commit-to-applied latency.
    first_seen: Option<(String, Instant)>,
    fetch_failures: u32,
    /// Plan the current commit again (a cluster's readiness changed).
    replan: bool,
    /// NotReady clusters, with why.
    unavailable: BTreeMap<String, String>,
    /// The newest desired state of every planned cluster, owned here or not.
    desired: BTreeMap<String, Arc<Desired>>,
    /// Shutting down: no cluster is held any more.
    stopping: bool,
    workers: HashMap<String, WorkerHandle>,
    probers: HashMap<String, (Option<SecretKeyRef>, AbortOnDrop)>,
    health_tx: mpsc::Sender<HealthChange>,
    /// The Leases: which shards this replica holds, told which have workers.
    leases: Option<LeaseHandle>,
    /// Each member's capacity as last read, for `Aggregated` and `dynamicWeight` division.
    capacity: placement::capacity::Capacity,
    /// The capacity the current plan was made with: a member whose nodes changed since
    /// (see [`allocatable_changed`]) gets the plan made again.
    planned_capacity: placement::capacity::Capacity,
    /// True while the plan has a policy that divides by capacity: the probers watch then.
    wants_capacity: tokio::sync::watch::Sender<bool>,
    capacity_tx: mpsc::Sender<CapacityReport>,
    /// The last plan's divisions: the next one divides by capacity from them (Karmada's
    /// previous result), so a replica change moves only what it must.
    divisions: placement::Divisions,
    /// The next plan divides by capacity afresh (Karmada's `Fresh` mode): the nodes changed.
    fresh_division: bool,
}

impl LoopState {
    fn new(
        health_tx: mpsc::Sender<HealthChange>,
        capacity_tx: mpsc::Sender<CapacityReport>,
        leases: Option<LeaseHandle>,
    ) -> Self {
        LoopState {
            planned_commit: None,
            first_seen: None,
            fetch_failures: 0,
            replan: false,
            unavailable: BTreeMap::new(),
            desired: BTreeMap::new(),
            stopping: false,
            workers: HashMap::new(),
            probers: HashMap::new(),
            health_tx,
            leases,
            capacity: Default::default(),
            planned_capacity: Default::default(),
            wants_capacity: tokio::sync::watch::Sender::new(false),
            capacity_tx,
            divisions: Default::default(),
            fresh_division: false,
        }
    }

    /// The shards this replica holds now; `None` without Leases (every cluster is held).
    fn ownership(&self) -> Option<Ownership> {
        let handle = self.leases.as_ref()?;
        Some(if self.stopping {
            Ownership::default()
        } else {
            handle.ownership.borrow().clone()
        })
    }

    /// Whether this replica syncs `cluster` now.
    fn holds(&self, ownership: &Option<Ownership>, cluster: &str) -> bool {
        !self.stopping && ownership.as_ref().is_none_or(|o| o.owns(cluster))
    }
}

/// A task aborted when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct WorkerHandle {
    sender: watch::Sender<Option<Arc<Desired>>>,
    task: tokio::task::JoinHandle<()>,
}

async fn reconcile(config: &Arc<AgentConfig>, shared: &Arc<Shared>, state: &mut LoopState) {
    let commit = match &config.source {
        Source::Git(git) => {
            let started = Instant::now();
            let git = git.clone();
            let fetched = match tokio::task::spawn_blocking(move || git.fetch()).await {
                Ok(fetched) => fetched.map_err(|error| error.to_string()),
                Err(panicked) => Err(panicked.to_string()),
            };
            shared
                .metrics
                .git_fetch_duration
                .with_label_values(&[] as &[&str])
                .observe(started.elapsed().as_secs_f64());
            match fetched {
                Ok(commit) => {
                    shared.metrics.git_fetches.with_label_values(&["ok"]).inc();
                    if state.fetch_failures > 0 {
                        state.fetch_failures = 0;
                        // The remote is back: a fetch error must not outlive it.
                        let mut status = shared.status.write().await;
                        if status
                            .error
                            .as_deref()
                            .is_some_and(|e| e.starts_with("fetch:"))
                        {
                            status.error = None;
                        }
                    }
                    commit
                }
                Err(error) => {
                    shared
                        .metrics
                        .git_fetches
                        .with_label_values(&["error"])
                        .inc();
                    state.fetch_failures += 1;
                    return report_error(shared, format!("fetch: {error}")).await;
                }
            }
        }
        // A directory has no commit: every trigger re-syncs, and a no-op sync costs reads only.
        Source::Directory(dir) => format!("dir:{}", dir.display()),
    };
    let span = tracing::info_span!("commit", commit = %commit);
    plan_commit(config, shared, state, commit)
        .instrument(span)
        .await;
}

/// The second half of [`reconcile`], in the commit's span: render and place the commit (unless
/// it is the one already planned and nothing asks for a re-plan), publish the plan's view in
/// `/status`, and hand each cluster its desired set.
async fn plan_commit(
    config: &Arc<AgentConfig>,
    shared: &Arc<Shared>,
    state: &mut LoopState,
    commit: String,
) {
    let new_commit = state.first_seen.as_ref().map(|(c, _)| c) != Some(&commit);
    if new_commit {
        state.first_seen = Some((commit.clone(), Instant::now()));
    }
    // A directory has no commits: each round's trigger is the moment its change was seen.
    let first_seen = match config.source {
        Source::Directory(_) => Instant::now(),
        Source::Git(_) => state
            .first_seen
            .as_ref()
            .map_or_else(Instant::now, |(_, t)| *t),
    };
    let replan = std::mem::take(&mut state.replan);
    if matches!(config.source, Source::Git(_))
        && state.planned_commit.as_ref() == Some(&commit)
        && !replan
    {
        return;
    }

    let unavailable: BTreeSet<String> = state.unavailable.keys().cloned().collect();
    let capacity = state.capacity.clone();
    let assignment = match std::mem::take(&mut state.fresh_division) {
        true => placement::Assignment::Fresh,
        false => placement::Assignment::Steady,
    };
    let previous = (state.divisions.clone(), assignment);
    let mut plan = match load_plan(config, &commit, unavailable, capacity.clone(), previous).await {
        Ok((plan, needs_capacity)) => {
            state.wants_capacity.send_replace(needs_capacity);
            state.planned_capacity = capacity;
            state.divisions = next_divisions(&state.divisions, &plan);
            plan
        }
        Err((stage, error)) => {
            shared
                .metrics
                .plan_failures
                .with_label_values(&[stage])
                .inc();
            // A commit that does not render or place never will; a failed checkout (disk
            // full, say) is tried again on the next round.
            if stage != "checkout" {
                state.planned_commit = Some(commit.clone());
            } else {
                state.replan |= replan;
                state.fresh_division |= assignment == placement::Assignment::Fresh;
            }
            return report_error(
                shared,
                format!("commit {commit}: {stage}: {error}; nothing applied"),
            )
            .await;
        }
    };
    for error in &plan.errors {
        tracing::warn!(commit = %commit, "{error}");
    }
    let failovers: Vec<FailoverView> = plan
        .resources
        .iter()
        .filter_map(|resource| {
            let failover = resource.failover.as_ref()?;
            Some(FailoverView {
                resource: resource.resource.to_string(),
                unavailable: failover
                    .unavailable
                    .iter()
                    .map(|c| {
                        (
                            c.clone(),
                            state.unavailable.get(c).cloned().unwrap_or_default(),
                        )
                    })
                    .collect(),
                targets: resource.targets.clone(),
                planned: failover.planned.clone(),
            })
        })
        .collect();
    for failover in &failovers {
        tracing::warn!(
            resource = failover.resource,
            unavailable = ?failover.unavailable,
            targets = ?failover.targets,
            "failover: replicas divided over the Ready clusters"
        );
    }
    {
        let mut status = shared.status.write().await;
        status.commit = Some(commit.clone());
        status.error = None;
        status.resource_errors = plan.errors.iter().map(ToString::to_string).collect();
        status.failovers = failovers;
        status
            .clusters
            .retain(|cluster, _| plan.desired.contains_key(cluster));
        // Every planned cluster is listed from now on: readiness waits for all of them.
        for cluster in plan.desired.keys() {
            status.clusters.entry(cluster.clone()).or_default();
        }
    }
    if !plan.errors.is_empty() {
        shared
            .metrics
            .plan_failures
            .with_label_values(&["resource"])
            .inc_by(plan.errors.len() as u64);
    }
    let secrets: HashMap<String, Option<SecretKeyRef>> = plan
        .clusters
        .iter()
        .map(|c| (c.name.clone(), c.kubeconfig_secret.clone()))
        .collect();
    // The objects move to the workers, each distinct object once: an object placed unchanged
    // on 20 clusters is kept once, not 20 times.
    let desired_sets = std::mem::take(&mut plan.desired);
    let mut distinct: HashMap<String, Arc<Object>> = HashMap::new();
    state.desired.clear();
    for (cluster, objects) in desired_sets {
        let objects = objects
            .into_iter()
            .map(|object| {
                let key = object.value.to_string();
                distinct
                    .entry(key)
                    .or_insert_with(|| Arc::new(object))
                    .clone()
            })
            .collect();
        let desired = Arc::new(Desired {
            commit: commit.clone(),
            secret: secrets.get(&cluster).cloned().flatten(),
            first_seen,
            keep: kept_by_plan_errors(&plan, &cluster),
            objects,
            // A failover of the same commit is not that commit's latency.
            latency_recorded: (!new_commit && replan).into(),
        });
        state.desired.insert(cluster, desired);
    }
    dispatch(config, shared, state).await;
    state.planned_commit = Some(commit);
}

/// Hands each planned cluster that this replica holds its desired state, starting its worker
/// when needed, and stops the workers of clusters no longer planned or held. Every planned
/// cluster is probed, held or not: failover needs every cluster's health.
async fn dispatch(config: &Arc<AgentConfig>, shared: &Arc<Shared>, state: &mut LoopState) {
    // The newest ownership: a shard lost while the loop was busy stops its workers now.
    let ownership = state.ownership();
    // Stop first, and wait: a cluster is never synced by two replicas at once.
    let stopping: Vec<String> = state
        .workers
        .keys()
        .filter(|cluster| {
            !state.desired.contains_key(*cluster) || !state.holds(&ownership, cluster)
        })
        .cloned()
        .collect();
    for cluster in stopping {
        if let Some(worker) = state.workers.remove(&cluster) {
            worker.task.abort();
            let _ = worker.task.await;
            tracing::info!(cluster, "cluster released");
        }
    }
    for (cluster, desired) in &state.desired {
        if !state.holds(&ownership, cluster) {
            continue;
        }
        match state.workers.get(cluster) {
            Some(worker) => {
                let _ = worker.sender.send(Some(desired.clone()));
            }
            None => {
                tracing::info!(cluster, "cluster acquired");
                let (sender, receiver) = watch::channel(Some(desired.clone()));
                let task = tokio::spawn(worker(
                    cluster.clone(),
                    config.clone(),
                    shared.clone(),
                    receiver,
                ));
                state
                    .workers
                    .insert(cluster.clone(), WorkerHandle { sender, task });
            }
        }
    }
    // Probers follow the plan: a cluster whose Secret reference changed is probed anew.
    let replaced: Vec<String> = state
        .probers
        .iter()
        .filter(|(cluster, (secret, _))| {
            state
                .desired
                .get(*cluster)
                .is_none_or(|d| d.secret != *secret)
        })
        .map(|(cluster, _)| cluster.clone())
        .collect();
    for cluster in replaced {
        state.probers.remove(&cluster);
        // A new prober starts Ready and reports changes only: forget the old verdict.
        if state.unavailable.remove(&cluster).is_some() {
            state.replan = true;
            shared.trigger.notify_one();
        }
    }
    for (cluster, desired) in &state.desired {
        if state.probers.contains_key(cluster) {
            continue;
        }
        // Health, and capacity while a policy divides by it: one task, aborted together.
        let task = tokio::spawn({
            let health = probe_cluster(
                cluster.clone(),
                desired.secret.clone(),
                config.credentials.clone(),
                config.health,
                state.health_tx.clone(),
            );
            let capacity = probe_capacity(
                cluster.clone(),
                desired.secret.clone(),
                config.credentials.clone(),
                state.wants_capacity.subscribe(),
                state.capacity_tx.clone(),
            );
            async move {
                tokio::join!(health, capacity);
            }
        });
        state
            .probers
            .insert(cluster.clone(), (desired.secret.clone(), AbortOnDrop(task)));
    }
    state
        .unavailable
        .retain(|cluster, _| state.desired.contains_key(cluster));
    let mut status = shared.status.write().await;
    for (cluster, view) in &mut status.clusters {
        view.synced_here = state.workers.contains_key(cluster);
    }
    if let (Some(handle), Some(ownership)) = (&state.leases, &ownership) {
        // The shards whose clusters have a worker now: a shard's Lease is freed only once
        // its workers are gone.
        let running = state
            .workers
            .keys()
            .map(|cluster| crate::cluster::lease::shard_of(cluster, ownership.total))
            .collect();
        let _ = handle.running.send(running);
        shared
            .metrics
            .shards_held
            .set(ownership.shards.len() as i64);
        status.shards = Some(ownership.shards.iter().copied().collect());
        status.lease_error = ownership.problem.clone();
    }
    update_readiness(&mut status);
}

/// Ready once every cluster synced here has synced the current commit.
fn update_readiness(status: &mut Status) {
    if status.commit.is_none() {
        return;
    }
    let current = status.commit.clone();
    let all_synced = status
        .clusters
        .values()
        .filter(|view| view.synced_here)
        .all(|view| view.status == Some(ClusterStatus::Synced) && view.commit == current);
    status.ready |= all_synced;
}

/// Records a readiness change in status, metrics, logs and a hub Event; true when the plan
/// must change (the cluster entered or left the unavailable set).
async fn cluster_health_changed(
    config: &AgentConfig,
    shared: &Shared,
    state: &mut LoopState,
    change: HealthChange,
) -> bool {
    let cluster = change.cluster.as_str();
    if !state.desired.contains_key(cluster) {
        return false;
    }
    shared
        .metrics
        .cluster_ready
        .with_label_values(&[cluster])
        .set(i64::from(change.ready));
    {
        let mut status = shared.status.write().await;
        let view = status.clusters.entry(cluster.to_string()).or_default();
        view.health = if change.ready {
            Readiness::Ready
        } else {
            Readiness::NotReady
        };
        view.health_reason = (!change.ready).then(|| change.reason.clone());
    }
    let (reason, message) = if change.ready {
        tracing::info!(cluster, reason = change.reason, "cluster Ready again");
        (
            "ClusterReady",
            format!(
                "cluster {cluster} is Ready: {}; planned division restored",
                change.reason
            ),
        )
    } else {
        tracing::warn!(cluster, reason = change.reason, "cluster NotReady");
        (
            "ClusterNotReady",
            format!(
                "cluster {cluster} is NotReady: {}; Divided replicas fail over",
                change.reason
            ),
        )
    };
    // One replica speaks for a cluster: the one that holds it.
    let held_here = state.holds(&state.ownership(), cluster);
    if let (Some(hub), true) = (&config.hub, held_here) {
        // Spawned: an unreachable hub must not hold up the loop.
        let (hub, cluster, warning) = (hub.clone(), cluster.to_string(), !change.ready);
        tokio::spawn(async move { hub.event(&cluster, warning, reason, &message).await });
    }
    if change.ready {
        state.unavailable.remove(cluster).is_some()
    } else {
        state
            .unavailable
            .insert(cluster.to_string(), change.reason)
            .is_none()
    }
}

/// Checks out, renders and places a commit, off the async threads.
/// Renders and places a commit; also says whether a policy divides by capacity.
async fn load_plan(
    config: &AgentConfig,
    commit: &str,
    unavailable: BTreeSet<String>,
    capacity: placement::capacity::Capacity,
    (divisions, assignment): (placement::Divisions, placement::Assignment),
) -> Result<(Plan, bool), (&'static str, String)> {
    let source = config.source.clone();
    let repo_path = config.repo_path.clone();
    let limits = config.limits;
    let commit = commit.to_string();
    let loaded = tokio::task::spawn_blocking(move || {
        let root = match &source {
            Source::Git(git) => git
                .checkout(&commit)
                .map_err(|e| ("checkout", e.to_string()))?,
            Source::Directory(dir) => dir.clone(),
        };
        let rendered = render::render_tree_with(&root, &repo_path, limits)
            .map_err(|e| ("render", e.to_string()))?;
        let needs_capacity = placement::needs_capacity(&rendered);
        let inputs = placement::PlanInputs {
            unavailable: &unavailable,
            capacity: needs_capacity.then_some(&capacity),
            previous: Some(placement::Previous {
                divisions: &divisions,
                assignment,
            }),
            max_placed_objects: limits.max_placed_objects,
        };
        placement::plan_with(&rendered, &inputs)
            .map(|plan| (plan, needs_capacity))
            .map_err(|e| ("place", e.to_string()))
    })
    .await;
    loaded.unwrap_or_else(|error| Err(("render", error.to_string())))
}

/// Records a member's capacity; true when the plan must be made again: a policy divides by
/// capacity and the member's nodes changed since the plan was made (pods never count, so a
/// division does not chase its own replicas).
fn capacity_changed(state: &mut LoopState, report: CapacityReport) -> bool {
    let CapacityReport { cluster, resources } = report;
    let changed = state
        .planned_capacity
        .clusters
        .get(&cluster)
        .is_none_or(|planned| allocatable_changed(planned, &resources));
    let wanted = *state.wants_capacity.borrow();
    if changed && wanted {
        tracing::info!(
            cluster,
            allocatable = ?resources.allocatable,
            "the cluster's nodes changed; dividing by capacity afresh"
        );
        state.fresh_division = true;
    }
    state.capacity.clusters.insert(cluster, resources);
    changed && wanted
}

/// The divisions the next plan starts from: this plan's, and for a resource that failed in it
/// (too little capacity, say) the one before, as Karmada keeps a binding's last result when
/// scheduling fails.
fn next_divisions(last: &placement::Divisions, plan: &Plan) -> placement::Divisions {
    let mut next = plan.divisions();
    for error in &plan.errors {
        if let Some(division) = last.get(&error.resource) {
            next.entry(error.resource.clone())
                .or_insert_with(|| division.clone());
        }
    }
    next
}

async fn report_error(shared: &Shared, error: String) {
    tracing::error!("{error}");
    shared.status.write().await.error = Some(error);
}

/// One cluster's worker: syncs when handed new objects, retries while failing, reconnects
/// when its credentials change, and handles drift and workload health. Ends when the loop
/// drops its sender, or is aborted when this replica loses the cluster.
async fn worker(
    cluster: String,
    config: Arc<AgentConfig>,
    shared: Arc<Shared>,
    mut desired_rx: watch::Receiver<Option<Arc<Desired>>>,
) {
    let (reports_tx, mut reports_rx) = mpsc::channel::<WatchReport>(256);
    let mut credentials_rx = config.credentials.changes();
    let mut member: Option<(Member, String)> = None;
    let mut connected_secret: Option<SecretKeyRef> = None;
    let mut watches = Watches::default();
    let mut watched: Vec<WatchedKind> = Vec::new();
    let mut failures: u32 = 0;
    let mut corrections = Corrections::default();
    let mut retry_at: Option<tokio::time::Instant> = None;
    // The first round syncs at once.
    desired_rx.mark_changed();
    loop {
        let retry = async {
            match retry_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let credentials_changed = async {
            match credentials_rx.as_mut() {
                Some(receiver) => receiver.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = desired_rx.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            Some(report) = reports_rx.recv() => {
                let desired = desired_rx.borrow().clone();
                match report {
                    WatchReport::Drift(drift) => {
                        if let (Some((member, _)), Some(desired)) = (&member, desired) {
                            handle_drift(&config, &shared, member, &desired, &mut corrections, drift)
                                .await;
                        }
                    }
                    WatchReport::Health { object, health } => {
                        record_workload(&shared, &cluster, &object, health).await;
                    }
                }
                continue;
            }
            true = credentials_changed => {
                let desired = desired_rx.borrow().clone();
                let secret = desired.as_ref().and_then(|d| d.secret.clone());
                let current = config.credentials.version(secret.as_ref()).await;
                let connected = member.as_ref().map(|(_, version)| version.clone());
                if current.is_none() || current == connected {
                    continue;
                }
                tracing::info!(cluster, "kubeconfig Secret changed; reconnecting");
                member = None;
                watches = Watches::default();
                watched.clear();
                desired_rx.mark_changed();
                continue;
            }
            () = retry => {}
        }
        let Some(desired) = desired_rx.borrow_and_update().clone() else {
            continue;
        };
        // The AttachedCluster now names another Secret: connect with that one.
        if connected_secret != desired.secret {
            member = None;
            watches = Watches::default();
            watched.clear();
            connected_secret = desired.secret.clone();
        }
        if member.is_none() {
            match config
                .credentials
                .connect(&cluster, desired.secret.as_ref())
                .await
            {
                Ok(connected) => member = Some(connected),
                Err(error) => {
                    let error = crate::cluster::error_chain(&error);
                    let report = ClusterReport::failed(&cluster, error, Duration::ZERO);
                    record(&shared, &report, &desired).await;
                    failures += 1;
                    retry_at = Some(tokio::time::Instant::now() + backoff(failures, &config));
                    continue;
                }
            }
        }
        let Some((connected, _)) = &member else {
            continue;
        };
        // No watch yet (the agent just started, or reconnected): drift that happened meanwhile
        // was seen by nobody, so this sync compares the live objects with what was applied.
        let drift_check = watched.is_empty().then_some(config.drift);
        let report = sync_cluster_checking(
            connected,
            &desired.objects,
            &desired.keep,
            &config.sync,
            drift_check,
        )
        .instrument(crate::apply::cluster_sync_span(
            &cluster,
            Some(&desired.commit),
        ))
        .await;
        record(&shared, &report, &desired).await;
        record_drift_at_start(&config, &shared, &report).await;
        match report.status {
            ClusterStatus::Synced => {
                failures = 0;
                retry_at = None;
            }
            status => {
                failures += 1;
                retry_at = Some(tokio::time::Instant::now() + backoff(failures, &config));
                if status == ClusterStatus::Failed {
                    // Reconnect (and re-read the credentials) next time; the watches then
                    // restart with the new client.
                    member = None;
                    watches = Watches::default();
                    watched.clear();
                    continue;
                }
            }
        }
        // Watch every kind this cluster now holds.
        let planned_kinds: BTreeSet<(&str, &str)> = desired
            .objects
            .iter()
            .map(|object| (object.api_version(), object.kind()))
            .collect();
        let mut kinds = Vec::with_capacity(planned_kinds.len());
        for (api_version, kind) in planned_kinds {
            if let Ok(Some(resource)) = connected.resource(api_version, kind).await {
                kinds.push(WatchedKind {
                    api_version: api_version.to_string(),
                    kind: kind.to_string(),
                    plural: resource.plural,
                });
            }
        }
        if kinds != watched {
            watches = watch_kinds(
                connected.client(),
                &cluster,
                &config.sync.name,
                &kinds,
                &reports_tx,
            );
            watched = kinds;
        }
    }
    drop(watches);
}

/// Records a workload's health in status and metrics.
async fn record_workload(
    shared: &Shared,
    cluster: &str,
    object: &ObjectRef,
    health: Option<WorkloadHealth>,
) {
    let mut status = shared.status.write().await;
    let view = status.clusters.entry(cluster.to_string()).or_default();
    let key = object.to_string();
    match health {
        Some(health) => {
            if view.workloads.get(&key).map(|h| h.state) != Some(health.state) {
                tracing::info!(
                    cluster,
                    object = key,
                    state = health.state.as_str(),
                    reason = health.reason,
                    "workload health"
                );
            }
            view.workloads.insert(key, health);
        }
        None => {
            view.workloads.remove(&key);
        }
    }
    for state in HEALTH_STATES {
        let count = view.workloads.values().filter(|h| h.state == state).count();
        shared
            .metrics
            .workloads
            .with_label_values(&[cluster, state.as_str()])
            .set(count as i64);
    }
}

/// 1 s doubling, up to the poll interval.
fn backoff(failures: u32, config: &AgentConfig) -> Duration {
    Duration::from_secs(1 << failures.saturating_sub(1).min(10))
        .min(config.interval.max(Duration::from_secs(1)))
}

/// Records a sync in metrics, logs and status.
async fn record(shared: &Shared, report: &ClusterReport, desired: &Desired) {
    let metrics = &shared.metrics;
    let cluster = report.cluster.as_str();
    let result = match report.status {
        ClusterStatus::Synced => "synced",
        ClusterStatus::Degraded => "degraded",
        ClusterStatus::Failed => "failed",
    };
    metrics.syncs.with_label_values(&[cluster, result]).inc();
    metrics
        .sync_duration
        .with_label_values(&[cluster])
        .observe(report.duration.as_secs_f64());
    metrics
        .cluster_reachable
        .with_label_values(&[cluster])
        .set(i64::from(report.status != ClusterStatus::Failed));
    let now = unix_now();
    if report.status == ClusterStatus::Synced {
        // Once per commit and cluster: retries and drift syncs are not a commit's latency.
        if !desired
            .latency_recorded
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            metrics
                .commit_to_applied
                .with_label_values(&[cluster])
                .observe(desired.first_seen.elapsed().as_secs_f64());
        }
        metrics
            .last_successful_sync
            .with_label_values(&[cluster])
            .set(now);
        metrics
            .objects_managed
            .with_label_values(&[cluster])
            .set((report.applied.len() + report.unchanged.len()) as i64);
    }
    if report.status == ClusterStatus::Synced
        && report.applied.is_empty()
        && report.pruned.is_empty()
    {
        tracing::debug!(cluster, commit = %desired.commit, "nothing to change");
    } else {
        tracing::info!(
            cluster,
            commit = %desired.commit,
            result,
            applied = report.applied.len(),
            unchanged = report.unchanged.len(),
            pruned = report.pruned.len(),
            failed = report.failed.len(),
            error = report.error.as_deref().unwrap_or(""),
            "synced"
        );
    }
    let mut status = shared.status.write().await;
    let view = status.clusters.entry(cluster.to_string()).or_default();
    view.status = Some(report.status);
    view.commit = Some(desired.commit.clone());
    view.error = report.error.clone();
    view.applied = report.applied.len();
    view.unchanged = report.unchanged.len();
    view.pruned = report.pruned.len();
    view.failed = report.failed.clone();
    view.last_sync = Some(now);
    if report.status == ClusterStatus::Synced {
        view.last_success = Some(now);
    }
    update_readiness(&mut status);
}

/// Corrections of one object within [`FIGHT_WINDOW`] after which Flotilla stops correcting
/// it: another controller keeps taking the same fields, and writing back and forth helps
/// nobody.
const FIGHT_LIMIT: usize = 5;
const FIGHT_WINDOW: Duration = Duration::from_secs(60);

/// Recent corrections per object, for [`FIGHT_LIMIT`].
#[derive(Default)]
struct Corrections {
    recent: HashMap<ObjectRef, Vec<Instant>>,
}

impl Corrections {
    /// Records a correction; false when the object has been corrected too often lately.
    fn allow(&mut self, object: &ObjectRef) -> bool {
        let times = self.recent.entry(object.clone()).or_default();
        times.retain(|time| time.elapsed() < FIGHT_WINDOW);
        if times.len() >= FIGHT_LIMIT {
            return false;
        }
        times.push(Instant::now());
        true
    }
}

/// Reports drift, and re-applies the object unless the agent or the object says report only,
/// or another controller keeps changing it back.
async fn handle_drift(
    config: &AgentConfig,
    shared: &Shared,
    member: &Member,
    desired: &Desired,
    corrections: &mut Corrections,
    mut drift: Drift,
) {
    let cluster = drift.cluster.clone();
    let cluster = cluster.as_str();
    let Some(object) = desired
        .objects
        .iter()
        .find(|object| object.object_ref().is_placed_as(&drift.object))
        .cloned()
    else {
        // Not (or no longer) planned here: Flotilla's own prune, or a change in flight.
        return;
    };
    // A replicas value that managedFields did not record (1.20's scale subresource) and that
    // is what Flotilla applies: its own apply within the same second, not drift.
    if drift.fields == ["spec.replicas"]
        && drift
            .replicas_seen
            .as_ref()
            .is_some_and(|seen| object.value.pointer("/spec/replicas") == Some(seen))
    {
        return;
    }
    note_drift(shared, &drift);
    let mut corrected = false;
    if config.drift == DriftMode::Correct && !drift.report_only {
        if !corrections.allow(&drift.object) {
            drift.note = Some(format!(
                "corrected {FIGHT_LIMIT} times in {} s: {} keeps changing it; only reported now",
                FIGHT_WINDOW.as_secs(),
                drift.managers.join(", ")
            ));
        } else if drift.fields == ["deleted"] {
            // Re-created: a full sync records the new uid in the inventory.
            let report = sync_cluster(member, &desired.objects, &desired.keep, &config.sync).await;
            record(shared, &report, desired).await;
            corrected = report.status == ClusterStatus::Synced;
        } else {
            let applied = match member.prepare(&object, &config.sync.name).await {
                Ok(prepared) => apply_one(member, &prepared, false)
                    .await
                    .map_err(|failure| failure.reason),
                Err(error) => Err(error.to_string()),
            };
            match applied {
                Ok(_) => corrected = true,
                Err(reason) => {
                    tracing::warn!(cluster, object = %drift.object, %reason, "drift not corrected");
                    drift.note = Some(format!("correction failed: {reason}"));
                }
            }
        }
    }
    record_drift(shared, drift, corrected).await;
}

/// Counts and logs a drift seen.
fn note_drift(shared: &Shared, drift: &Drift) {
    shared
        .metrics
        .drift_detected
        .with_label_values(&[drift.cluster.as_str()])
        .inc();
    tracing::warn!(
        cluster = drift.cluster,
        object = %drift.object,
        fields = drift.fields.join(", "),
        managers = drift.managers.join(", "),
        "drift"
    );
}

/// Records a drift's outcome in metrics and `/status`.
async fn record_drift(shared: &Shared, drift: Drift, corrected: bool) {
    let cluster = drift.cluster.clone();
    if corrected {
        shared
            .metrics
            .drift_corrected
            .with_label_values(&[&cluster])
            .inc();
    }
    let mut status = shared.status.write().await;
    let view = status.clusters.entry(cluster).or_default();
    view.drift.push(DriftView {
        drift,
        corrected,
        seen: unix_now(),
    });
    if view.drift.len() > DRIFT_SHOWN {
        view.drift.remove(0);
    }
}

/// Reports the drift a sync found by comparing live objects (see [`sync_cluster_checking`]):
/// corrected when the sync applied the object again.
async fn record_drift_at_start(config: &AgentConfig, shared: &Shared, report: &ClusterReport) {
    for drift in &report.drift {
        note_drift(shared, drift);
        let corrected = config.drift == DriftMode::Correct
            && !drift.report_only
            && report.applied.contains(&drift.object);
        record_drift(shared, drift.clone(), corrected).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_fought_over_is_corrected_a_bounded_number_of_times() {
        let object = ObjectRef {
            group: "apps".into(),
            version: "v1".into(),
            kind: "Deployment".into(),
            namespace: "web".into(),
            name: "nginx".into(),
        };
        let other = ObjectRef {
            name: "api".into(),
            ..object.clone()
        };
        let mut corrections = Corrections::default();
        for _ in 0..FIGHT_LIMIT {
            assert!(corrections.allow(&object));
        }
        assert!(
            !corrections.allow(&object),
            "the sixth correction in a minute is refused"
        );
        assert!(corrections.allow(&other), "other objects are not affected");
    }

    #[test]
    fn planned_objects_without_a_namespace_match_default() {
        let live = ObjectRef {
            group: String::new(),
            version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: "default".into(),
            name: "a".into(),
        };
        let planned = ObjectRef {
            namespace: String::new(),
            ..live.clone()
        };
        assert!(planned.is_placed_as(&live));
        let elsewhere = ObjectRef {
            namespace: "web".into(),
            ..live.clone()
        };
        assert!(!elsewhere.is_placed_as(&live));
    }
}
