//! The agent's status store: the one writer of `/status`.
//!
//! The loop, the workers and the probers tell the store what happened, each through one method
//! here; nothing else changes a [`Status`]. Readers (the HTTP server, tests) get the newest
//! status from a [`watch`] channel, without taking a lock anyone writes under.

use std::collections::BTreeSet;

use tokio::sync::watch;

use crate::apply::{ClusterReport, ClusterStatus};
use crate::object::ObjectRef;
use crate::status::{DRIFT_SHOWN, DriftView, FailoverView, Readiness, Status};
use crate::workload::{HEALTH_STATES, HealthState, WorkloadHealth};

/// The stage of a fetch error, cleared by the next good fetch (a commit's error is cleared by
/// the next good commit).
const FETCH: &str = "fetch";

/// The status, written here only; see the module doc.
pub struct StatusStore {
    status: watch::Sender<Status>,
}

impl Default for StatusStore {
    fn default() -> Self {
        StatusStore {
            status: watch::Sender::new(Status::default()),
        }
    }
}

impl StatusStore {
    /// The status now.
    pub fn snapshot(&self) -> Status {
        self.status.borrow().clone()
    }

    /// A receiver of every new status.
    pub fn subscribe(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    /// This replica's identity, when replicas share clusters through Leases.
    pub fn set_replica(&self, identity: &str) {
        self.status
            .send_modify(|status| status.replica = Some(identity.to_string()));
    }

    /// A fetch succeeded: a fetch error must not outlive the remote's return.
    pub fn fetched(&self) {
        self.status.send_if_modified(|status| {
            let clear = status.error_stage.as_deref() == Some(FETCH);
            if clear {
                status.error = None;
                status.error_stage = None;
            }
            clear
        });
    }

    /// A fetch, checkout, render or placement failed (`stage`, see
    /// [`crate::sync::CommitError::kind`]); the last good state stays.
    pub fn failed(&self, stage: &str, error: String) {
        self.status.send_modify(|status| {
            status.error = Some(error);
            status.error_stage = Some(stage.to_string());
        });
    }

    /// A commit was placed and handed out: its resource errors and failovers, and the planned
    /// clusters (every one listed from now on: readiness waits for all of them).
    pub fn planned(
        &self,
        commit: &str,
        resource_errors: Vec<String>,
        failovers: Vec<FailoverView>,
        clusters: &BTreeSet<String>,
    ) {
        self.status.send_modify(|status| {
            status.commit = Some(commit.to_string());
            status.error = None;
            status.error_stage = None;
            status.resource_errors = resource_errors;
            status.failovers = failovers;
            status
                .clusters
                .retain(|cluster, _| clusters.contains(cluster));
            for cluster in clusters {
                status.clusters.entry(cluster.clone()).or_default();
            }
        });
    }

    /// Which clusters have a worker here, and, with Leases, the shards held and why none can
    /// be.
    pub fn workers(
        &self,
        synced_here: &BTreeSet<String>,
        shards: Option<(Vec<u32>, Option<String>)>,
    ) {
        self.status.send_modify(|status| {
            for (cluster, view) in &mut status.clusters {
                view.synced_here = synced_here.contains(cluster);
            }
            if let Some((shards, problem)) = shards {
                status.shards = Some(shards);
                status.lease_error = problem;
            }
            update_readiness(status);
        });
    }

    /// A cluster's readiness changed.
    pub fn health(&self, cluster: &str, ready: bool, reason: &str) {
        self.status.send_modify(|status| {
            let view = status.clusters.entry(cluster.to_string()).or_default();
            view.health = if ready {
                Readiness::Ready
            } else {
                Readiness::NotReady
            };
            view.health_reason = (!ready).then(|| reason.to_string());
        });
    }

    /// A cluster was synced to `commit` at `now` (Unix time).
    pub fn synced(&self, report: &ClusterReport, commit: &str, now: f64) {
        self.status.send_modify(|status| {
            let view = status.clusters.entry(report.cluster.clone()).or_default();
            view.status = Some(report.status);
            view.commit = Some(commit.to_string());
            view.error = report.error.clone();
            view.applied = report.applied.len();
            view.unchanged = report.unchanged.len();
            view.pruned = report.pruned.len();
            view.failed = report.failed.clone();
            view.last_sync = Some(now);
            if report.status == ClusterStatus::Synced {
                view.last_success = Some(now);
            }
            update_readiness(status);
        });
    }

    /// A workload's health, as its watch last saw it (`None`: it is gone). Returns the state
    /// it had before, and how many of the cluster's workloads are in each of [`HEALTH_STATES`],
    /// for the metrics.
    pub fn workload(
        &self,
        cluster: &str,
        object: &ObjectRef,
        health: Option<WorkloadHealth>,
    ) -> (Option<HealthState>, [usize; HEALTH_STATES.len()]) {
        let mut before = None;
        let mut counts = [0; HEALTH_STATES.len()];
        self.status.send_modify(|status| {
            let view = status.clusters.entry(cluster.to_string()).or_default();
            let key = object.to_string();
            let previous = match health {
                Some(health) => view.workloads.insert(key, health),
                None => view.workloads.remove(&key),
            };
            before = previous.map(|health| health.state);
            for health in view.workloads.values() {
                if let Some(at) = HEALTH_STATES.iter().position(|s| *s == health.state) {
                    counts[at] += 1;
                }
            }
        });
        (before, counts)
    }

    /// A drift seen, with whether it was corrected; the newest [`DRIFT_SHOWN`] are kept.
    pub fn drift(&self, cluster: &str, drift: DriftView) {
        self.status.send_modify(|status| {
            let view = status.clusters.entry(cluster.to_string()).or_default();
            view.drift.push(drift);
            if view.drift.len() > DRIFT_SHOWN {
                view.drift.remove(0);
            }
        });
    }
}

/// Ready once every cluster synced here has synced the current commit; stays ready after.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::Drift;

    fn synced(cluster: &str) -> ClusterReport {
        ClusterReport::new(cluster)
    }

    fn clusters(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    #[test]
    fn ready_once_every_cluster_synced_here_has_the_current_commit_and_it_stays_ready() {
        let store = StatusStore::default();
        let planned = clusters(&["a", "b"]);
        store.planned("c1", Vec::new(), Vec::new(), &planned);
        store.workers(&planned, None);
        assert!(!store.snapshot().ready);
        store.synced(&synced("a"), "c1", 1.0);
        assert!(!store.snapshot().ready, "b has not synced yet");
        store.synced(&synced("b"), "c0", 1.0);
        assert!(!store.snapshot().ready, "b synced an older commit");
        store.synced(&synced("b"), "c1", 2.0);
        let status = store.snapshot();
        assert!(status.ready);
        assert_eq!(status.clusters["b"].last_success, Some(2.0));
        // A new commit does not make a ready agent unready.
        store.planned("c2", Vec::new(), Vec::new(), &planned);
        assert!(store.snapshot().ready);
    }

    #[test]
    fn clusters_held_by_another_replica_do_not_hold_up_readiness() {
        let store = StatusStore::default();
        store.planned("c1", Vec::new(), Vec::new(), &clusters(&["a", "b"]));
        store.workers(&clusters(&["a"]), Some((vec![0], None)));
        store.synced(&synced("a"), "c1", 1.0);
        let status = store.snapshot();
        assert!(status.ready);
        assert!(!status.clusters["b"].synced_here);
        assert_eq!(status.shards, Some(vec![0]));
    }

    #[test]
    fn a_fetch_error_is_cleared_by_the_next_good_fetch_and_a_render_error_by_the_next_commit() {
        let store = StatusStore::default();
        store.failed("fetch", "fetch: gone".into());
        assert_eq!(store.snapshot().error_stage.as_deref(), Some("fetch"));
        store.fetched();
        assert_eq!(store.snapshot().error, None);

        store.failed("render", "commit c: render: bad; nothing applied".into());
        store.fetched();
        assert_eq!(
            store.snapshot().error.as_deref(),
            Some("commit c: render: bad; nothing applied"),
            "a good fetch of a bad commit leaves its error"
        );
        store.planned("c2", Vec::new(), Vec::new(), &clusters(&["a"]));
        let status = store.snapshot();
        assert_eq!((status.error, status.error_stage), (None, None));
    }

    #[test]
    fn only_the_newest_drift_is_kept_and_clusters_leave_with_the_plan() {
        let store = StatusStore::default();
        store.planned("c1", Vec::new(), Vec::new(), &clusters(&["a", "gone"]));
        for i in 0..DRIFT_SHOWN + 5 {
            let drift = Drift {
                cluster: "a".into(),
                object: crate::object::ObjectRef {
                    group: String::new(),
                    version: "v1".into(),
                    kind: "ConfigMap".into(),
                    namespace: "default".into(),
                    name: format!("cm-{i}"),
                },
                fields: vec!["data.x".into()],
                deleted: false,
                managers: vec!["kubectl".into()],
                report_only: false,
                replicas_seen: None,
                note: None,
            };
            store.drift(
                "a",
                DriftView {
                    drift,
                    corrected: true,
                    seen: i as f64,
                },
            );
        }
        let status = store.snapshot();
        let drift = &status.clusters["a"].drift;
        assert_eq!(drift.len(), DRIFT_SHOWN);
        assert_eq!(drift[0].seen, 5.0, "the oldest went first");
        store.planned("c2", Vec::new(), Vec::new(), &clusters(&["a"]));
        assert!(!store.snapshot().clusters.contains_key("gone"));
    }

    #[test]
    fn a_workload_change_says_what_it_was_and_counts_every_state() {
        let store = StatusStore::default();
        let object = |name: &str| crate::object::ObjectRef {
            group: "apps".into(),
            version: "v1".into(),
            kind: "Deployment".into(),
            namespace: "web".into(),
            name: name.into(),
        };
        let health = |state| WorkloadHealth {
            state,
            reason: String::new(),
        };
        let (before, counts) =
            store.workload("a", &object("x"), Some(health(HealthState::Progressing)));
        assert_eq!((before, counts), (None, [1, 0, 0]));
        store.workload("a", &object("y"), Some(health(HealthState::Degraded)));
        let (before, counts) =
            store.workload("a", &object("x"), Some(health(HealthState::Available)));
        assert_eq!(
            (before, counts),
            (Some(HealthState::Progressing), [0, 1, 1])
        );
        let (before, counts) = store.workload("a", &object("y"), None);
        assert_eq!((before, counts), (Some(HealthState::Degraded), [0, 1, 0]));
        assert_eq!(store.snapshot().clusters["a"].workloads.len(), 1);
    }
}
