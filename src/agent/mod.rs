//! The agent: a loop that follows the source, and one worker per member cluster.
//!
//! The loop syncs the current commit on each poll or webhook trigger through
//! [`sync_commit`]: a new commit is checked out, rendered and placed, and each cluster's worker
//! is handed its desired set; the same commit does nothing. A commit that fails to load, render
//! or place is handed to nobody: the last good state stays, and the error shows in status, logs
//! and metrics.
//!
//! A worker ([`worker`]) syncs its cluster whenever it is handed a new set, retries with
//! backoff while a retry can help, and watches the kinds it manages for drift (see
//! [`crate::cluster::watch`]), correcting or reporting it, and for workload health. A dead or
//! slow cluster only ever holds up its own worker.
//!
//! Every cluster is probed (see [`crate::cluster::health`]); while one is NotReady, the commit
//! is placed again with its Divided replicas failed over to the others. With several replicas,
//! a replica runs workers only for the clusters of the shards it holds (see
//! [`crate::cluster::lease`]). Everything the agent knows is published by one writer,
//! [`store::StatusStore`].

mod dispatch;
pub mod store;
mod worker;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::{Notify, mpsc};

use crate::apply::{SyncOptions, kept_by_plan_errors};
use crate::cluster::capacity::{CapacityReport, allocatable_changed};
use crate::cluster::health::{HealthChange, HealthSettings};
use crate::cluster::hub::{Hub, MemberCredentials};
use crate::cluster::lease::LeaseHandle;
use crate::drift::DriftMode;
use crate::metrics::Metrics;
use crate::object::Object;
use crate::placement::types::SecretKeyRef;
use crate::placement::{self, Plan};
use crate::source::{Source, SourceError};
use crate::status::FailoverView;
use crate::sync::{self, CommitError, PlaceInputs, Placed, sync_commit};
use dispatch::{Desired, Fleet};
use store::StatusStore;

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

impl AgentConfig {
    /// The backoff of a retry (a fetch, a cluster's sync): see [`retry_backoff`].
    fn retry_backoff(&self) -> backon::ExponentialBackoff {
        retry_backoff(self.interval)
    }
}

/// From 1 s, doubling, with jitter, up to the poll interval; never ending, since the agent
/// runs until stopped.
fn retry_backoff(interval: Duration) -> backon::ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(interval.max(Duration::from_secs(1)))
        .with_jitter()
        .without_max_times()
        .build()
}

/// What the loop, the workers and the HTTP server share.
pub struct Shared {
    /// The status, with its one writer.
    pub status: StatusStore,
    /// Wakes the loop; triggers that come while it works coalesce into one more round.
    pub trigger: Arc<Notify>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
}

impl Shared {
    /// A fresh status, trigger and `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Shared {
            status: StatusStore::default(),
            trigger: Arc::new(Notify::new()),
            metrics: Arc::new(metrics),
        }
    }
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
        shared.status.set_replica(&handle.identity);
    }
    let (capacity_tx, mut capacity_rx) = mpsc::channel::<CapacityReport>(64);
    let mut fleet = Fleet::new(
        config.clone(),
        shared.clone(),
        health_tx,
        capacity_tx,
        leases,
    );
    let mut commits = Commits::default();
    let mut fetch_retry: Option<backon::ExponentialBackoff> = None;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let synced = sync_commit(
            &config.source,
            &config.repo_path,
            config.limits,
            &mut AgentCommits {
                commits: &mut commits,
                fleet: &mut fleet,
            },
        )
        .await;
        // After a failed fetch, retry sooner than the poll interval, backing off.
        let retry = match synced {
            Ok(_) => {
                fetch_retry = None;
                None
            }
            Err(error) => {
                let retry = commits.failed(&shared, &error);
                retry
                    .then(|| {
                        fetch_retry
                            .get_or_insert_with(|| config.retry_backoff())
                            .next()
                    })
                    .flatten()
            }
        };
        let wait = retry.unwrap_or(config.interval.max(Duration::from_secs(1)));
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
                    if fleet.health_changed(change).await {
                        // Place the same commit again, with or without the failover.
                        commits.replan = true;
                        break;
                    }
                }
                Some(report) = capacity_rx.recv() => {
                    if commits.capacity_changed(report, fleet.wants_capacity()) {
                        commits.replan = true;
                        break;
                    }
                }
                true = ownership_changed => {
                    fleet.dispatch().await;
                }
                () = &mut shutdown => {
                    fleet.stop().await;
                    return;
                }
            }
        }
    }
}

/// What the loop remembers between commits.
#[derive(Default)]
struct Commits {
    /// The commit last handed to the workers (or that failed for good).
    planned: Option<String>,
    /// When the newest commit was first seen, for commit-to-applied latency.
    first_seen: Option<(String, Instant)>,
    /// Place the current commit again (a cluster's readiness or capacity changed).
    replan: bool,
    /// Each member's capacity as last read, for `Aggregated` and `dynamicWeight` division.
    capacity: placement::capacity::Capacity,
    /// The capacity the current plan was made with: a member whose nodes changed since
    /// (see [`allocatable_changed`]) gets the plan made again.
    planned_capacity: placement::capacity::Capacity,
    /// The last plan's divisions: the next one divides by capacity from them (Karmada's
    /// previous result), so a replica change moves only what it must.
    divisions: placement::Divisions,
    /// The next plan divides by capacity afresh (Karmada's `Fresh` mode): the nodes changed.
    fresh_division: bool,
    /// What the round in progress asked placement for, to ask again if it fails for a reason
    /// that can pass.
    asked: Option<Asked>,
}

impl Commits {
    /// Records a commit that was not handed out; true when trying again soon can help.
    fn failed(&mut self, shared: &Shared, error: &CommitError) -> bool {
        // Fetches are counted by `git_fetches`; the rest are a commit's failures.
        let fetching = matches!(
            error,
            CommitError::Fetch(_) | CommitError::Stopped { stage: "fetch", .. }
        );
        if !fetching {
            shared
                .metrics
                .plan_failures
                .with_label_values(&[error.kind()])
                .inc();
        }
        let retryable = error.is_retryable();
        if let Some(asked) = self.asked.take() {
            if retryable {
                // Ask again next round, as this round did.
                self.replan |= asked.replan;
                self.fresh_division |= asked.assignment == placement::Assignment::Fresh;
            } else {
                // A commit that does not render or place never will.
                self.planned = Some(asked.commit);
            }
        }
        tracing::error!("{error}");
        shared.status.failed(error.kind(), error.to_string());
        retryable
    }

    /// Records a member's capacity; true when the plan must be made again: a policy divides
    /// by capacity and the member's nodes changed since the plan was made (pods never count,
    /// so a division does not chase its own replicas).
    fn capacity_changed(&mut self, report: CapacityReport, wanted: bool) -> bool {
        let CapacityReport { cluster, resources } = report;
        let changed = self
            .planned_capacity
            .clusters
            .get(&cluster)
            .is_none_or(|planned| allocatable_changed(planned, &resources));
        if changed && wanted {
            tracing::info!(
                cluster,
                allocatable = ?resources.allocatable,
                "the cluster's nodes changed; dividing by capacity afresh"
            );
            self.fresh_division = true;
        }
        self.capacity.clusters.insert(cluster, resources);
        changed && wanted
    }
}

/// A round's request to placement.
struct Asked {
    commit: String,
    /// The commit was seen for the first time in this round.
    new_commit: bool,
    /// The round places the commit again (failover, capacity).
    replan: bool,
    assignment: placement::Assignment,
}

/// The agent's side of [`sync_commit`]: which commits need placing, and handing the plan to
/// the workers.
struct AgentCommits<'a> {
    commits: &'a mut Commits,
    fleet: &'a mut Fleet,
}

impl sync::Clusters for AgentCommits<'_> {
    type Handed = ();

    fn fetched(&mut self, elapsed: Duration, outcome: Result<&str, &SourceError>) {
        let shared = &self.fleet.shared;
        if outcome.is_ok() {
            shared.status.fetched();
        }
        // A directory is read, not fetched.
        if !matches!(self.fleet.config.source, Source::Git(_)) {
            return;
        }
        let metrics = &shared.metrics;
        metrics
            .git_fetch_duration
            .with_label_values(&[] as &[&str])
            .observe(elapsed.as_secs_f64());
        let result = if outcome.is_ok() { "ok" } else { "error" };
        metrics.git_fetches.with_label_values(&[result]).inc();
    }

    fn inputs_for(&mut self, commit: &str) -> Option<PlaceInputs> {
        let commits = &mut *self.commits;
        let new_commit = commits.first_seen.as_ref().map(|(c, _)| c.as_str()) != Some(commit);
        if new_commit {
            commits.first_seen = Some((commit.to_string(), Instant::now()));
        }
        let replan =
            std::mem::take(&mut commits.replan) | std::mem::take(&mut self.fleet.needs_replan);
        if !self.fleet.config.source.resyncs_every_trigger()
            && commits.planned.as_deref() == Some(commit)
            && !replan
        {
            return None;
        }
        let assignment = match std::mem::take(&mut commits.fresh_division) {
            true => placement::Assignment::Fresh,
            false => placement::Assignment::Steady,
        };
        commits.asked = Some(Asked {
            commit: commit.to_string(),
            new_commit,
            replan,
            assignment,
        });
        Some(PlaceInputs {
            unavailable: self.fleet.unavailable.keys().cloned().collect(),
            capacity: Some(commits.capacity.clone()),
            previous: Some((commits.divisions.clone(), assignment)),
        })
    }

    async fn hand(&mut self, placed: Placed) {
        let Placed {
            commit,
            mut plan,
            divides_by_capacity,
        } = placed;
        let commits = &mut *self.commits;
        let asked = commits.asked.take();
        // A failover of the same commit is not that commit's latency.
        let latency_recorded = asked.is_some_and(|asked| !asked.new_commit && asked.replan);
        self.fleet.set_wants_capacity(divides_by_capacity);
        commits.planned_capacity = commits.capacity.clone();
        commits.divisions = next_divisions(&commits.divisions, &plan);
        publish_plan(self.fleet, &commit, &plan);

        // A directory has no commits: each round's trigger is the moment its change was seen.
        let first_seen = match &commits.first_seen {
            Some((_, seen)) if !self.fleet.config.source.resyncs_every_trigger() => *seen,
            _ => Instant::now(),
        };
        let desired = desired_sets(&mut plan, &commit, first_seen, latency_recorded);
        self.fleet.hand(desired).await;
        commits.planned = Some(commit);
    }
}

/// Publishes a plan's errors and failovers in logs, metrics and `/status`.
fn publish_plan(fleet: &Fleet, commit: &str, plan: &Plan) {
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
                        let reason = fleet.unavailable.get(c).cloned().unwrap_or_default();
                        (c.clone(), reason)
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
    if !plan.errors.is_empty() {
        fleet
            .shared
            .metrics
            .plan_failures
            .with_label_values(&["resource"])
            .inc_by(plan.errors.len() as u64);
    }
    let clusters: BTreeSet<String> = plan.desired.keys().cloned().collect();
    let resource_errors = plan.errors.iter().map(ToString::to_string).collect();
    fleet
        .shared
        .status
        .planned(commit, resource_errors, failovers, &clusters);
}

/// Each planned cluster's desired set, as its worker gets it. The objects move out of the
/// plan, each distinct object once: an object placed unchanged on 20 clusters is kept once,
/// not 20 times.
fn desired_sets(
    plan: &mut Plan,
    commit: &str,
    first_seen: Instant,
    latency_recorded: bool,
) -> BTreeMap<String, Arc<Desired>> {
    let secrets: HashMap<String, Option<SecretKeyRef>> = plan
        .clusters
        .iter()
        .map(|c| (c.name.clone(), c.kubeconfig_secret.clone()))
        .collect();
    let mut distinct: HashMap<String, Arc<Object>> = HashMap::new();
    let mut sets = BTreeMap::new();
    for (cluster, objects) in std::mem::take(&mut plan.desired) {
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
        let desired = Desired {
            commit: commit.to_string(),
            secret: secrets.get(&cluster).cloned().flatten(),
            first_seen,
            keep: kept_by_plan_errors(plan, &cluster),
            objects,
            latency_recorded: latency_recorded.into(),
        };
        sets.insert(cluster, Arc::new(desired));
    }
    sets
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_start_at_a_second_grow_to_the_poll_interval_and_never_end() {
        let interval = Duration::from_secs(30);
        let delays: Vec<Duration> = retry_backoff(interval).take(200).collect();
        assert_eq!(delays.len(), 200, "the agent retries until stopped");
        // Jitter adds up to the delay itself.
        assert!(delays[0] >= Duration::from_secs(1) && delays[0] <= Duration::from_secs(2));
        assert!(
            delays.iter().all(|delay| *delay <= interval * 2),
            "{delays:?}"
        );
        assert!(
            delays[100..].iter().all(|delay| *delay >= interval),
            "doubling reaches the interval: {delays:?}"
        );
        // A poll interval under a second still waits a second.
        let fast = retry_backoff(Duration::from_millis(10)).next();
        assert!(fast.is_some_and(|delay| delay >= Duration::from_secs(1)));
    }
}
