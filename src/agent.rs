//! The agent's reconcile loop: on each poll or webhook trigger, fetch the source; a new commit
//! is checked out, rendered, placed and applied to every member cluster. The same commit does
//! nothing once it is synced everywhere. A commit that fails to load, render or place applies
//! nothing: the last good state stays, and the error shows in status, logs and metrics.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::{Notify, RwLock};

use crate::apply::{ClusterStatus, ObjectProblem, SyncOptions, member::connect_all, sync_fleet};
use crate::metrics::Metrics;
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
    /// A kubeconfig with one context per member cluster; read again on every sync.
    pub kubeconfig: PathBuf,
    /// How often to poll without a trigger.
    pub interval: Duration,
    /// How to sync.
    pub sync: SyncOptions,
}

/// What `/status` shows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    /// The commit last applied (or being applied).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Unix time of the last sync.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_sync: Option<f64>,
    /// Whether a sync has succeeded everywhere at least once.
    pub ready: bool,
    /// The last fetch, render or place error; cleared by the next good commit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Per cluster, its last sync.
    pub clusters: BTreeMap<String, ClusterView>,
}

/// One cluster in `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterView {
    /// `synced`, `degraded` or `failed`.
    pub status: ClusterStatus,
    /// The commit it holds.
    pub commit: String,
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
    /// Unix time of the cluster's last successful sync.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_success: Option<f64>,
}

/// What the loop and the HTTP server share.
pub struct Shared {
    /// The status.
    pub status: RwLock<Status>,
    /// Wakes the loop; triggers that come while it syncs coalesce into one more sync.
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

/// Runs the loop forever.
pub async fn run(config: AgentConfig, shared: Arc<Shared>) {
    let mut state = LoopState::default();
    loop {
        reconcile(&config, &shared, &mut state).await;
        // After a failed fetch, retry sooner: 1 s doubling up to the poll interval.
        let wait = match state.fetch_failures {
            0 => config.interval,
            n => Duration::from_secs(1 << n.min(10)).min(config.interval),
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shared.trigger.notified() => {}
        }
    }
}

#[derive(Default)]
struct LoopState {
    /// The commit every cluster holds.
    synced_commit: Option<String>,
    /// When each commit was first seen, for commit-to-applied latency.
    first_seen: HashMap<String, Instant>,
    fetch_failures: u32,
}

async fn reconcile(config: &AgentConfig, shared: &Shared, state: &mut LoopState) {
    let commit = match &config.source {
        Source::Git(git) => {
            let started = Instant::now();
            let git = git.clone();
            let fetched = tokio::task::spawn_blocking(move || git.fetch()).await;
            shared
                .metrics
                .git_fetch_duration
                .with_label_values(&[] as &[&str])
                .observe(started.elapsed().as_secs_f64());
            match fetched {
                Ok(Ok(commit)) => {
                    shared.metrics.git_fetches.with_label_values(&["ok"]).inc();
                    state.fetch_failures = 0;
                    commit
                }
                Ok(Err(error)) => {
                    shared
                        .metrics
                        .git_fetches
                        .with_label_values(&["error"])
                        .inc();
                    state.fetch_failures += 1;
                    return report_error(shared, format!("fetch: {error}")).await;
                }
                Err(error) => return report_error(shared, format!("fetch: {error}")).await,
            }
        }
        // A directory has no commit: every trigger re-syncs, and a no-op sync costs reads only.
        Source::Directory(dir) => format!("dir:{}", dir.display()),
    };
    state.first_seen.retain(|seen, _| *seen == commit);
    let first_seen = *state
        .first_seen
        .entry(commit.clone())
        .or_insert_with(Instant::now);
    if matches!(config.source, Source::Git(_)) && state.synced_commit.as_ref() == Some(&commit) {
        return;
    }

    let plan = match load_plan(config, &commit).await {
        Ok(plan) => plan,
        Err((stage, error)) => {
            shared
                .metrics
                .plan_failures
                .with_label_values(&[stage])
                .inc();
            tracing::error!(commit = %commit, "{stage}: {error}; nothing applied");
            return report_error(shared, format!("commit {commit}: {stage}: {error}")).await;
        }
    };
    for error in &plan.errors {
        tracing::warn!(commit = %commit, "{error}");
    }

    let names: Vec<String> = plan.desired.keys().cloned().collect();
    let members = match connect_all(&config.kubeconfig, &names).await {
        Ok(members) => members,
        Err(error) => return report_error(shared, error.to_string()).await,
    };
    let metrics = &shared.metrics;
    let reports = sync_fleet(&plan, &members, &config.sync, |report| {
        let result = match report.status {
            ClusterStatus::Synced => "synced",
            ClusterStatus::Degraded => "degraded",
            ClusterStatus::Failed => "failed",
        };
        let cluster = report.cluster.as_str();
        metrics.syncs.with_label_values(&[cluster, result]).inc();
        metrics
            .sync_duration
            .with_label_values(&[cluster])
            .observe(report.duration.as_secs_f64());
        metrics
            .cluster_reachable
            .with_label_values(&[cluster])
            .set(i64::from(report.status != ClusterStatus::Failed));
        if report.status == ClusterStatus::Synced {
            metrics
                .commit_to_applied
                .with_label_values(&[cluster])
                .observe(first_seen.elapsed().as_secs_f64());
            metrics
                .last_successful_sync
                .with_label_values(&[cluster])
                .set(unix_now());
            metrics
                .objects_managed
                .with_label_values(&[cluster])
                .set((report.applied.len() + report.unchanged.len()) as i64);
        }
        tracing::info!(
            cluster,
            commit = %commit,
            result,
            applied = report.applied.len(),
            unchanged = report.unchanged.len(),
            pruned = report.pruned.len(),
            failed = report.failed.len(),
            error = report.error.as_deref().unwrap_or(""),
            "synced"
        );
    })
    .await;

    let all_synced = reports.iter().all(|r| r.status == ClusterStatus::Synced);
    state.synced_commit = all_synced.then(|| commit.clone());
    let mut status = shared.status.write().await;
    status.commit = Some(commit.clone());
    status.last_sync = Some(unix_now());
    status.error = None;
    status.ready |= all_synced;
    let previous = std::mem::take(&mut status.clusters);
    for report in reports {
        let last_success = if report.status == ClusterStatus::Synced {
            Some(unix_now())
        } else {
            previous
                .get(&report.cluster)
                .and_then(|view| view.last_success)
        };
        status.clusters.insert(
            report.cluster.clone(),
            ClusterView {
                status: report.status,
                commit: commit.clone(),
                error: report.error,
                applied: report.applied.len(),
                unchanged: report.unchanged.len(),
                pruned: report.pruned.len(),
                failed: report.failed,
                last_success,
            },
        );
    }
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
