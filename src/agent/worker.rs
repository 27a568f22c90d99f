//! One cluster's worker: applies the cluster's desired set with
//! [`crate::apply::apply_cluster`], retries while a retry can help, and handles the drift and
//! workload health its watches report.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use super::dispatch::Desired;
use super::{AgentConfig, Shared};
use crate::apply::{ClusterError, ClusterReport, ClusterStatus, Member, apply_cluster, apply_one};
use crate::cluster::watch::{WatchReport, WatchedKind, Watches, watch_kinds};
use crate::drift::{Drift, DriftMode};
use crate::object::ObjectRef;
use crate::placement::types::SecretKeyRef;
use crate::status::DriftView;
use crate::workload::{HEALTH_STATES, WorkloadHealth};

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// One cluster's worker: syncs when handed new objects, retries while failing, reconnects
/// when its credentials change, and handles drift and workload health. Ends when the loop
/// drops its sender, or is aborted when this replica loses the cluster.
pub(super) async fn worker(
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
    let mut backoff = config.retry_backoff();
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
                        record_workload(&shared, &cluster, &object, health);
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
                    let error = ClusterError::Connect {
                        problem: crate::error::chain(&error),
                        retryable: error.is_retryable(),
                    };
                    let report = ClusterReport::failed(&cluster, &error, Duration::ZERO);
                    record(&shared, &report, &desired);
                    retry_at = backoff
                        .next()
                        .map(|wait| tokio::time::Instant::now() + wait);
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
        let report = apply_cluster(
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
        record(&shared, &report, &desired);
        record_drift_at_start(&config, &shared, &report);
        match report.status {
            ClusterStatus::Synced => {
                backoff = config.retry_backoff();
                retry_at = None;
            }
            status => {
                // A refused object stays refused until the next commit; a timeout or an
                // unreachable cluster backs off and tries again.
                retry_at = match report.retryable() {
                    true => backoff
                        .next()
                        .map(|wait| tokio::time::Instant::now() + wait),
                    false => None,
                };
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
fn record_workload(
    shared: &Shared,
    cluster: &str,
    object: &ObjectRef,
    health: Option<WorkloadHealth>,
) {
    let seen = health.as_ref().map(|h| (h.state, h.reason.clone()));
    let (before, counts) = shared.status.workload(cluster, object, health);
    if let Some((state, reason)) = seen
        && before != Some(state)
    {
        tracing::info!(
            cluster,
            object = %object,
            state = state.as_str(),
            reason,
            "workload health"
        );
    }
    for (state, count) in HEALTH_STATES.iter().zip(counts) {
        shared
            .metrics
            .workloads
            .with_label_values(&[cluster, state.as_str()])
            .set(count as i64);
    }
}

/// Records a sync in metrics, logs and status.
fn record(shared: &Shared, report: &ClusterReport, desired: &Desired) {
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
    shared.status.synced(report, &desired.commit, now);
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
    if drift
        .unrecorded_replicas()
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
        } else if drift.deleted {
            // Re-created: a full sync records the new uid in the inventory.
            let report = apply_cluster(member, &desired.objects, &desired.keep, &config.sync, None)
                .instrument(crate::apply::cluster_sync_span(
                    &member.name,
                    Some(&desired.commit),
                ))
                .await;
            record(shared, &report, desired);
            corrected = report.status == ClusterStatus::Synced;
        } else {
            let applied = match member.prepare(&object, &config.sync.name).await {
                Ok(prepared) => apply_one(member, &prepared, false)
                    .await
                    .map_err(|failure| failure.error.to_string()),
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
    record_drift(shared, drift, corrected);
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
fn record_drift(shared: &Shared, drift: Drift, corrected: bool) {
    let cluster = drift.cluster.clone();
    if corrected {
        shared
            .metrics
            .drift_corrected
            .with_label_values(&[&cluster])
            .inc();
    }
    shared.status.drift(
        &cluster,
        DriftView {
            drift,
            corrected,
            seen: unix_now(),
        },
    );
}

/// Reports the drift a sync found by comparing live objects (see [`apply_cluster`]):
/// corrected when the sync applied the object again.
fn record_drift_at_start(config: &AgentConfig, shared: &Shared, report: &ClusterReport) {
    for drift in &report.drift {
        note_drift(shared, drift);
        let corrected = config.drift == DriftMode::Correct
            && !drift.report_only
            && report.applied.contains(&drift.object);
        record_drift(shared, drift.clone(), corrected);
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
