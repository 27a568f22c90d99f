//! The agent: a reconcile loop that follows the source, and one worker per member cluster.
//!
//! The loop fetches on each poll or webhook trigger. A new commit is checked out, rendered and
//! placed, and each cluster's worker is handed its desired objects; the same commit does
//! nothing. A commit that fails to load, render or place is handed to nobody: the last good
//! state stays, and the error shows in status, logs and metrics.
//!
//! A worker syncs its cluster whenever it is handed new objects, retries with backoff while
//! its cluster fails, and watches the kinds it manages for drift (see [`crate::drift`]),
//! correcting or reporting it. A dead or slow cluster only ever holds up its own worker.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kube::config::Kubeconfig;
use serde::Serialize;
use tokio::sync::{Notify, RwLock, mpsc, watch};

use crate::apply::{
    ClusterReport, ClusterStatus, Member, ObjectProblem, SyncOptions, apply_one,
    kept_by_plan_errors, sync_cluster,
};
use crate::drift::{Drift, DriftMode, WatchedKind, watch_kinds};
use crate::metrics::Metrics;
use crate::object::{Object, ObjectRef};
use crate::placement::{self, Plan};
use crate::render;
use crate::source::GitSource;

/// Where the fleet repo comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A Git repository.
    Git(GitSource),
    /// A directory on disk (development): re-synced on every trigger.
    Directory(PathBuf),
}

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The fleet repo.
    pub source: Source,
    /// The fleet path inside the repo (`.` for its root).
    pub repo_path: PathBuf,
    /// A kubeconfig with one context per member cluster; read again when a worker reconnects.
    pub kubeconfig: PathBuf,
    /// How often to poll without a trigger.
    pub interval: Duration,
    /// How to sync.
    pub sync: SyncOptions,
    /// What to do about drift.
    pub drift: DriftMode,
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
    /// Per cluster, its last sync and drift.
    pub clusters: BTreeMap<String, ClusterView>,
}

/// One cluster in `/status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClusterView {
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
    first_seen: Instant,
    /// Shared between clusters where equal: most objects are the same in every cluster.
    objects: Vec<Arc<Object>>,
    keep: BTreeSet<ObjectRef>,
    /// Set once commit-to-applied latency was recorded for this cluster.
    latency_recorded: std::sync::atomic::AtomicBool,
}

/// Runs the loop forever.
pub async fn run(config: AgentConfig, shared: Arc<Shared>) {
    let config = Arc::new(config);
    let mut state = LoopState::default();
    loop {
        reconcile(&config, &shared, &mut state).await;
        // After a failed fetch, retry sooner: 1 s doubling up to the poll interval.
        let interval = config.interval.max(Duration::from_secs(1));
        let wait = match state.fetch_failures {
            0 => interval,
            n => Duration::from_secs(1 << (n - 1).min(10)).min(interval),
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shared.trigger.notified() => {}
        }
    }
}

#[derive(Default)]
struct LoopState {
    /// The commit last handed to the workers.
    planned_commit: Option<String>,
    /// When the newest commit was first seen, for commit-to-applied latency.
    first_seen: Option<(String, Instant)>,
    fetch_failures: u32,
    workers: HashMap<String, watch::Sender<Option<Arc<Desired>>>>,
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
    if state.first_seen.as_ref().map(|(c, _)| c) != Some(&commit) {
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
    if matches!(config.source, Source::Git(_)) && state.planned_commit.as_ref() == Some(&commit) {
        return;
    }

    let mut plan = match load_plan(config, &commit).await {
        Ok(plan) => plan,
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
    {
        let mut status = shared.status.write().await;
        status.commit = Some(commit.clone());
        status.error = None;
        status.resource_errors = plan.errors.iter().map(ToString::to_string).collect();
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
    // Clusters that left the fleet: their workers stop (nothing is deleted there).
    state
        .workers
        .retain(|cluster, _| plan.desired.contains_key(cluster));
    // The objects move to the workers, each distinct object once: an object placed unchanged
    // on 20 clusters is kept once, not 20 times.
    let desired_sets = std::mem::take(&mut plan.desired);
    let mut distinct: HashMap<String, Arc<Object>> = HashMap::new();
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
            first_seen,
            keep: kept_by_plan_errors(&plan, &cluster),
            objects,
            latency_recorded: Default::default(),
        });
        match state.workers.get(&cluster) {
            Some(sender) => {
                let _ = sender.send(Some(desired));
            }
            None => {
                let (sender, receiver) = watch::channel(Some(desired));
                tokio::spawn(worker(
                    cluster.clone(),
                    config.clone(),
                    shared.clone(),
                    receiver,
                ));
                state.workers.insert(cluster.clone(), sender);
            }
        }
    }
    state.planned_commit = Some(commit);
}

/// Checks out, renders and places a commit, off the async threads.
async fn load_plan(config: &AgentConfig, commit: &str) -> Result<Plan, (&'static str, String)> {
    let source = config.source.clone();
    let repo_path = config.repo_path.clone();
    let commit = commit.to_string();
    let loaded = tokio::task::spawn_blocking(move || {
        let root = match &source {
            Source::Git(git) => git
                .checkout(&commit)
                .map_err(|e| ("checkout", e.to_string()))?,
            Source::Directory(dir) => dir.clone(),
        };
        let rendered =
            render::render_tree(&root, &repo_path).map_err(|e| ("render", e.to_string()))?;
        placement::plan(&rendered).map_err(|e| ("place", e.to_string()))
    })
    .await;
    loaded.unwrap_or_else(|error| Err(("render", error.to_string())))
}

async fn report_error(shared: &Shared, error: String) {
    tracing::error!("{error}");
    shared.status.write().await.error = Some(error);
}

async fn connect(config: &AgentConfig, cluster: &str) -> Result<Member, String> {
    let kubeconfig = Kubeconfig::read_from(&config.kubeconfig)
        .map_err(|error| format!("{}: {error}", config.kubeconfig.display()))?;
    Member::from_kubeconfig(&kubeconfig, &config.kubeconfig, cluster)
        .await
        .map_err(|error| error.to_string())
}

/// One cluster's worker: syncs when handed new objects, retries while failing, and handles
/// drift. Ends when the loop drops its sender.
async fn worker(
    cluster: String,
    config: Arc<AgentConfig>,
    shared: Arc<Shared>,
    mut desired_rx: watch::Receiver<Option<Arc<Desired>>>,
) {
    let (drift_tx, mut drift_rx) = mpsc::channel::<Drift>(256);
    let mut member: Option<Member> = None;
    let mut watches: Vec<tokio::task::JoinHandle<()>> = Vec::new();
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
        tokio::select! {
            changed = desired_rx.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            Some(drift) = drift_rx.recv() => {
                let desired = desired_rx.borrow().clone();
                if let (Some(member), Some(desired)) = (&member, desired) {
                    handle_drift(&config, &shared, member, &desired, &mut corrections, drift)
                        .await;
                }
                continue;
            }
            () = retry => {}
        }
        let Some(desired) = desired_rx.borrow_and_update().clone() else {
            continue;
        };
        if member.is_none() {
            match connect(&config, &cluster).await {
                Ok(connected) => member = Some(connected),
                Err(error) => {
                    let report = ClusterReport::failed(&cluster, error, Duration::ZERO);
                    record(&shared, &report, &desired).await;
                    failures += 1;
                    retry_at = Some(tokio::time::Instant::now() + backoff(failures, &config));
                    continue;
                }
            }
        }
        let Some(connected) = &member else { continue };
        let report = sync_cluster(connected, &desired.objects, &desired.keep, &config.sync).await;
        record(&shared, &report, &desired).await;
        match report.status {
            ClusterStatus::Synced => {
                failures = 0;
                retry_at = None;
            }
            status => {
                failures += 1;
                retry_at = Some(tokio::time::Instant::now() + backoff(failures, &config));
                if status == ClusterStatus::Failed {
                    // Reconnect (and re-read the kubeconfig) next time; the watches then
                    // restart with the new client.
                    member = None;
                    for handle in watches.drain(..) {
                        handle.abort();
                    }
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
            for handle in watches.drain(..) {
                handle.abort();
            }
            watches = watch_kinds(
                connected.client(),
                &cluster,
                &config.sync.name,
                &kinds,
                &drift_tx,
            );
            watched = kinds;
        }
    }
    for handle in watches {
        handle.abort();
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
    let current = status.commit.clone();
    let all_synced = !status.clusters.is_empty()
        && status
            .clusters
            .values()
            .all(|view| view.status == Some(ClusterStatus::Synced) && view.commit == current);
    status.ready |= all_synced;
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
    shared
        .metrics
        .drift_detected
        .with_label_values(&[cluster])
        .inc();
    tracing::warn!(
        cluster,
        object = %drift.object,
        fields = drift.fields.join(", "),
        managers = drift.managers.join(", "),
        "drift"
    );
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
        if corrected {
            shared
                .metrics
                .drift_corrected
                .with_label_values(&[cluster])
                .inc();
        }
    }
    let mut status = shared.status.write().await;
    let view = status.clusters.entry(cluster.to_string()).or_default();
    view.drift.push(DriftView {
        drift,
        corrected,
        seen: unix_now(),
    });
    if view.drift.len() > DRIFT_SHOWN {
        view.drift.remove(0);
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
