//! The clusters of the current plan: which have a worker here, their probers, and their
//! readiness.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, watch};

use super::worker::worker;
use super::{AgentConfig, Shared};
use crate::cluster::capacity::{CapacityReport, probe_capacity};
use crate::cluster::health::{HealthChange, probe_cluster};
use crate::cluster::lease::{LeaseHandle, Ownership};
use crate::object::{Object, ObjectRef};
use crate::placement::types::SecretKeyRef;

/// One cluster's desired state, as handed to its worker.
pub(super) struct Desired {
    pub(super) commit: String,
    /// Where the hub keeps the cluster's kubeconfig.
    pub(super) secret: Option<SecretKeyRef>,
    pub(super) first_seen: Instant,
    /// Shared between clusters where equal: most objects are the same in every cluster.
    pub(super) objects: Vec<Arc<Object>>,
    /// Resources the plan could not place here: what runs of them stays.
    pub(super) keep: BTreeSet<ObjectRef>,
    /// Set once commit-to-applied latency was recorded for this cluster.
    pub(super) latency_recorded: std::sync::atomic::AtomicBool,
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

/// The planned clusters and what runs for them.
pub(super) struct Fleet {
    pub(super) config: Arc<AgentConfig>,
    pub(super) shared: Arc<Shared>,
    /// NotReady clusters, with why: the truth that `/status` and failover are made from.
    pub(super) unavailable: BTreeMap<String, String>,
    /// The newest desired state of every planned cluster, held here or not.
    desired: BTreeMap<String, Arc<Desired>>,
    /// A prober was replaced while its cluster was NotReady: the plan must be made again
    /// without that verdict.
    pub(super) needs_replan: bool,
    /// Shutting down: no cluster is held any more.
    stopping: bool,
    workers: HashMap<String, WorkerHandle>,
    probers: HashMap<String, (Option<SecretKeyRef>, AbortOnDrop)>,
    health_tx: mpsc::Sender<HealthChange>,
    /// The Leases: which shards this replica holds, told which have workers.
    leases: Option<LeaseHandle>,
    /// True while the plan has a policy that divides by capacity: the probers watch then.
    wants_capacity: watch::Sender<bool>,
    capacity_tx: mpsc::Sender<CapacityReport>,
}

impl Fleet {
    pub(super) fn new(
        config: Arc<AgentConfig>,
        shared: Arc<Shared>,
        health_tx: mpsc::Sender<HealthChange>,
        capacity_tx: mpsc::Sender<CapacityReport>,
        leases: Option<LeaseHandle>,
    ) -> Self {
        Fleet {
            config,
            shared,
            unavailable: BTreeMap::new(),
            desired: BTreeMap::new(),
            needs_replan: false,
            stopping: false,
            workers: HashMap::new(),
            probers: HashMap::new(),
            health_tx,
            leases,
            wants_capacity: watch::Sender::new(false),
            capacity_tx,
        }
    }

    /// Whether the current plan divides replicas by capacity.
    pub(super) fn wants_capacity(&self) -> bool {
        *self.wants_capacity.borrow()
    }

    /// Starts or stops the probers' capacity watches.
    pub(super) fn set_wants_capacity(&self, wanted: bool) {
        self.wants_capacity.send_replace(wanted);
    }

    /// Hands every planned cluster its desired set.
    pub(super) async fn hand(&mut self, desired: BTreeMap<String, Arc<Desired>>) {
        self.desired = desired;
        self.dispatch().await;
    }

    /// Stops every worker and releases the Leases, so another replica takes over at once.
    pub(super) async fn stop(&mut self) {
        self.stopping = true;
        self.dispatch().await;
        if let Some(handle) = self.leases.take() {
            handle.release().await;
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

    /// Hands each planned cluster that this replica holds its desired state, starting its
    /// worker when needed, and stops the workers of clusters no longer planned or held. Every
    /// planned cluster is probed, held or not: failover needs every cluster's health.
    pub(super) async fn dispatch(&mut self) {
        // The newest ownership: a shard lost while the loop was busy stops its workers now.
        let ownership = self.ownership();
        self.stop_workers(&ownership).await;
        self.start_workers(&ownership);
        self.follow_probers();
        self.unavailable
            .retain(|cluster, _| self.desired.contains_key(cluster));
        let synced_here: BTreeSet<String> = self.workers.keys().cloned().collect();
        let shards = match (&self.leases, &ownership) {
            (Some(handle), Some(ownership)) => {
                // The shards whose clusters have a worker now: a shard's Lease is freed only
                // once its workers are gone.
                let running = self
                    .workers
                    .keys()
                    .map(|cluster| crate::cluster::lease::shard_of(cluster, ownership.total))
                    .collect();
                let _ = handle.running.send(running);
                self.shared
                    .metrics
                    .shards_held
                    .set(ownership.shards.len() as i64);
                let held = ownership.shards.iter().copied().collect();
                Some((held, ownership.problem.clone()))
            }
            _ => None,
        };
        self.shared.status.workers(&synced_here, shards);
    }

    /// Stops, and waits for, the workers of clusters no longer planned or held: a cluster is
    /// never synced by two replicas at once.
    async fn stop_workers(&mut self, ownership: &Option<Ownership>) {
        let stopping: Vec<String> = self
            .workers
            .keys()
            .filter(|cluster| {
                !self.desired.contains_key(*cluster) || !self.holds(ownership, cluster)
            })
            .cloned()
            .collect();
        for cluster in stopping {
            if let Some(worker) = self.workers.remove(&cluster) {
                worker.task.abort();
                let _ = worker.task.await;
                tracing::info!(cluster, "cluster released");
            }
        }
    }

    /// Hands each held cluster its desired set, starting its worker when it has none.
    fn start_workers(&mut self, ownership: &Option<Ownership>) {
        for (cluster, desired) in &self.desired {
            if !self.holds(ownership, cluster) {
                continue;
            }
            match self.workers.get(cluster) {
                Some(worker) => {
                    let _ = worker.sender.send(Some(desired.clone()));
                }
                None => {
                    tracing::info!(cluster, "cluster acquired");
                    let (sender, receiver) = watch::channel(Some(desired.clone()));
                    let task = tokio::spawn(worker(
                        cluster.clone(),
                        self.config.clone(),
                        self.shared.clone(),
                        receiver,
                    ));
                    self.workers
                        .insert(cluster.clone(), WorkerHandle { sender, task });
                }
            }
        }
    }

    /// Probes every planned cluster: health, and capacity while a policy divides by it. A
    /// cluster whose Secret reference changed is probed anew.
    fn follow_probers(&mut self) {
        let replaced: Vec<String> = self
            .probers
            .iter()
            .filter(|(cluster, (secret, _))| {
                self.desired
                    .get(*cluster)
                    .is_none_or(|d| d.secret != *secret)
            })
            .map(|(cluster, _)| cluster.clone())
            .collect();
        for cluster in replaced {
            self.probers.remove(&cluster);
            // A new prober starts Ready and reports changes only: forget the old verdict.
            if self.unavailable.remove(&cluster).is_some() {
                self.needs_replan = true;
                self.shared.trigger.notify_one();
            }
        }
        for (cluster, desired) in &self.desired {
            if self.probers.contains_key(cluster) {
                continue;
            }
            // Health, and capacity while a policy divides by it: one task, aborted together.
            let task = tokio::spawn({
                let health = probe_cluster(
                    cluster.clone(),
                    desired.secret.clone(),
                    self.config.credentials.clone(),
                    self.config.health,
                    self.health_tx.clone(),
                );
                let capacity = probe_capacity(
                    cluster.clone(),
                    desired.secret.clone(),
                    self.config.credentials.clone(),
                    self.wants_capacity.subscribe(),
                    self.capacity_tx.clone(),
                );
                async move {
                    tokio::join!(health, capacity);
                }
            });
            self.probers
                .insert(cluster.clone(), (desired.secret.clone(), AbortOnDrop(task)));
        }
    }

    /// Records a readiness change in status, metrics, logs and a hub Event; true when the
    /// plan must change (the cluster entered or left the unavailable set).
    pub(super) async fn health_changed(&mut self, change: HealthChange) -> bool {
        let cluster = change.cluster.as_str();
        if !self.desired.contains_key(cluster) {
            return false;
        }
        self.shared
            .metrics
            .cluster_ready
            .with_label_values(&[cluster])
            .set(i64::from(change.ready));
        self.shared
            .status
            .health(cluster, change.ready, &change.reason);
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
        let held_here = self.holds(&self.ownership(), cluster);
        if let (Some(hub), true) = (&self.config.hub, held_here) {
            // Spawned: an unreachable hub must not hold up the loop.
            let (hub, cluster, warning) = (hub.clone(), cluster.to_string(), !change.ready);
            tokio::spawn(async move { hub.event(&cluster, warning, reason, &message).await });
        }
        if change.ready {
            self.unavailable.remove(cluster).is_some()
        } else {
            self.unavailable
                .insert(cluster.to_string(), change.reason)
                .is_none()
        }
    }
}
