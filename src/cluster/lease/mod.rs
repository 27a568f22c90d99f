//! Sharing member clusters between agent replicas with `coordination.k8s.io/v1` Leases.
//!
//! Clusters are hashed into a fixed number of shards (`--shards`). Each shard is a Lease in the
//! hub (`<group>-shard-<n>`); a replica syncs the clusters of a shard only while it holds that
//! shard's Lease, so a cluster is synced by one replica at a time. Each replica also renews a
//! Lease of its own (`<group>-replica-<identity>`) to say it is alive; every replica sees the
//! same live set and gives each shard to the live replica with the highest rendezvous hash, so
//! shards spread over the replicas and move only when a replica comes or goes.
//!
//! A replica takes a shard only when it is free, or when its Lease has not changed for the
//! Lease's duration by the taker's own clock (client-go's rule: the safety of a takeover never
//! depends on comparing clocks). A holder stops syncing a shard when it could not renew for two
//! thirds of that, before anyone may take it; a replica that stops cleanly releases its shards
//! at once. The duration written in the Leases is `--lease-duration` less two retry periods (one
//! to see the last renewal, one to act), so a dead replica's shards are taken within
//! `--lease-duration`. Renewals cost one write per held Lease every third of the duration; one
//! list per retry period (a fifteenth of `--lease-duration`) observes all.

mod decide;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::cluster::hub::Hub;
use decide::dns_part;
pub use decide::{
    LeaseTiming, ReplicaView, ShardAction, ShardLease, decide_shard, preferred_holder,
    renewal_lapsed, shard_of,
};

/// Labels every Lease of one group, so one list sees them all.
const GROUP_LABEL: &str = "flotilla.dev/lease-group";
/// Replica Leases unchanged this long belong to replicas long gone, and are deleted.
const FORGET_REPLICA_AFTER: Duration = Duration::from_secs(300);

/// How the replicas share clusters.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// Names the Leases: `flotilla` (or `flotilla-<sync name>`).
    pub group: String,
    /// This replica's name in the Leases (the Pod name in a Pod).
    pub identity: String,
    /// How many shards the clusters are hashed into.
    pub shards: u32,
    /// The most a dead replica's shards stay untaken (`--lease-duration`).
    pub duration: Duration,
}

/// The shards this replica may sync now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ownership {
    /// Held shards.
    pub shards: BTreeSet<u32>,
    /// The shard count, to map clusters to shards.
    pub total: u32,
    /// Why Leases cannot be held now (the hub namespace is missing, say).
    pub problem: Option<String>,
}

impl Ownership {
    /// Whether this replica syncs `cluster`.
    pub fn owns(&self, cluster: &str) -> bool {
        self.total > 0 && self.shards.contains(&shard_of(cluster, self.total))
    }
}

/// What this replica last saw of a Lease, by its own clock.
struct Observed {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    since: Instant,
}

/// Runs the lease loop; the receiver tells which shards this replica holds. Dropping the
/// returned [`LeaseHandle`]'s `release` sender releases every held shard.
pub fn spawn(hub: &Hub, settings: LeaseSettings) -> LeaseHandle {
    let (ownership_tx, ownership) = watch::channel(Ownership {
        shards: BTreeSet::new(),
        total: settings.shards,
        problem: None,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let (running_tx, running) = watch::channel(BTreeSet::new());
    let api: Api<Lease> = Api::namespaced(hub.client.clone(), &hub.namespace);
    let mut elector = Elector {
        api,
        settings: Arc::new(settings),
        observed: HashMap::new(),
        held: BTreeMap::new(),
        ownership: ownership_tx,
        running,
        problem: None,
        last_replica_renewal: None,
    };
    let identity = elector.settings.identity.clone();
    let task = tokio::spawn(async move { elector.run(stop_rx).await });
    LeaseHandle {
        identity,
        ownership,
        running: running_tx,
        stop: stop_tx,
        task,
    }
}

/// The running lease loop.
pub struct LeaseHandle {
    /// This replica's identity.
    pub identity: String,
    /// The shards held now.
    pub ownership: watch::Receiver<Ownership>,
    /// The shards whose clusters the agent syncs now: a shard is freed for another replica
    /// only once it has left this set.
    pub running: watch::Sender<BTreeSet<u32>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl LeaseHandle {
    /// Stops syncing, releases every held shard so others take over at once, and returns.
    /// The agent must go on reporting `running` until this returns.
    pub async fn release(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

struct Elector {
    api: Api<Lease>,
    settings: Arc<LeaseSettings>,
    observed: HashMap<String, Observed>,
    /// Held shards, with when the last successful acquire or renewal was sent.
    held: BTreeMap<u32, (Instant, Lease)>,
    ownership: watch::Sender<Ownership>,
    running: watch::Receiver<BTreeSet<u32>>,
    problem: Option<String>,
    last_replica_renewal: Option<Instant>,
}

impl Elector {
    fn timing(&self) -> LeaseTiming {
        LeaseTiming::of(self.settings.duration)
    }

    fn retry_period(&self) -> Duration {
        self.timing().retry_period
    }

    fn lease_span(&self) -> Duration {
        self.timing().span
    }

    fn lease_seconds(&self) -> i32 {
        self.lease_span().as_secs() as i32
    }

    fn renew_every(&self) -> Duration {
        self.timing().renew_every
    }

    fn renew_deadline(&self) -> Duration {
        self.timing().renew_deadline
    }

    fn shard_lease(&self, shard: u32) -> String {
        format!("{}-shard-{shard}", self.settings.group)
    }

    fn replica_lease(&self) -> String {
        format!(
            "{}-replica-{}",
            self.settings.group,
            dns_part(&self.settings.identity)
        )
    }

    async fn run(&mut self, mut stop: watch::Receiver<bool>) {
        loop {
            let started = Instant::now();
            // A hung hub must not keep a shard past its deadline: a round ends by the earliest
            // renewal deadline of the held shards, where publish() gives them up.
            let deadline = self
                .held
                .values()
                .map(|(renewed, _)| {
                    (*renewed + self.renew_deadline()).saturating_duration_since(started)
                })
                .fold(self.renew_every(), Duration::min);
            let round = tokio::time::timeout(deadline, self.round()).await;
            if round.is_err() {
                tracing::warn!("lease round timed out");
            }
            self.publish();
            let next = started + self.retry_period();
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                _ = stop.changed() => break,
            }
        }
        self.release_all().await;
    }

    /// Shards whose renewal is recent enough; published whenever it changes.
    fn publish(&mut self) {
        let deadline = self.renew_deadline();
        let now = Instant::now();
        let lost: Vec<u32> = self
            .held
            .iter()
            .filter(|(_, (renewed, _))| renewal_lapsed(*renewed, now, deadline))
            .map(|(shard, _)| *shard)
            .collect();
        for shard in lost {
            tracing::warn!(shard, "shard lease not renewed in time; giving it up");
            self.held.remove(&shard);
        }
        let ownership = Ownership {
            shards: self.held.keys().copied().collect(),
            total: self.settings.shards,
            problem: self.problem.clone(),
        };
        self.ownership.send_if_modified(|current| {
            if *current == ownership {
                false
            } else {
                *current = ownership;
                true
            }
        });
    }

    async fn round(&mut self) {
        let params =
            ListParams::default().labels(&format!("{GROUP_LABEL}={}", self.settings.group));
        let leases = match self.api.list(&params).await {
            Ok(list) => list.items,
            Err(error) => {
                tracing::warn!(%error, "listing leases failed");
                self.problem = Some(format!("listing Leases: {error}"));
                return;
            }
        };
        let now = Instant::now();
        let by_name: HashMap<String, Lease> = leases
            .into_iter()
            .filter_map(|lease| Some((lease.metadata.name.clone()?, lease)))
            .collect();
        if self
            .last_replica_renewal
            .is_none_or(|at| now.duration_since(at) >= self.renew_every())
        {
            let name = self.replica_lease();
            match self.write(&name, by_name.get(&name).cloned(), false).await {
                Ok(_) => {
                    self.last_replica_renewal = Some(now);
                    self.problem = None;
                }
                Err(error) => {
                    // Shards cannot be held where this replica cannot even say it is alive
                    // (no namespace, no rights): they are given up at their deadline.
                    tracing::warn!(lease = name, %error, "renewing the replica lease failed");
                    self.problem = Some(format!("Lease {name}: {error}"));
                    return;
                }
            }
        }
        for (name, lease) in &by_name {
            let spec = lease.spec.clone().unwrap_or_default();
            let observed = self.observed.entry(name.clone()).or_insert(Observed {
                holder: spec.holder_identity.clone(),
                renew_time: spec.renew_time.clone(),
                since: now,
            });
            if observed.holder != spec.holder_identity || observed.renew_time != spec.renew_time {
                *observed = Observed {
                    holder: spec.holder_identity,
                    renew_time: spec.renew_time,
                    since: now,
                };
            }
        }
        self.observed.retain(|name, _| by_name.contains_key(name));

        // Live replicas: their Lease changed within its duration, plus this one. A Lease seen
        // for the first time counts as just changed (client-go's rule); its renewTime, older
        // than the duration by the wall clock, marks a replica long gone at once. Liveness only
        // decides who should hold a shard, never whether a shard may be taken, so a skewed
        // clock costs balance, not safety.
        let wall_now = k8s_openapi::jiff::Timestamp::now().as_millisecond();
        let replica_prefix = format!("{}-replica-", self.settings.group);
        let identity = self.settings.identity.clone();
        let mut live: BTreeSet<&str> = BTreeSet::new();
        live.insert(identity.as_str());
        let mut forgotten = Vec::new();
        for (name, lease) in &by_name {
            if !name.starts_with(&replica_prefix) {
                continue;
            }
            let Some(observed) = self.observed.get(name) else {
                continue;
            };
            let age = now.duration_since(observed.since);
            let holder = lease
                .spec
                .as_ref()
                .and_then(|s| s.holder_identity.as_deref());
            let duration = self.lease_duration(lease);
            let renewed_lately = lease
                .spec
                .as_ref()
                .and_then(|s| s.renew_time.as_ref())
                .is_none_or(|renewed| {
                    let age_ms = wall_now.saturating_sub(renewed.0.as_millisecond());
                    u128::try_from(age_ms).unwrap_or(0) < duration.as_millis()
                });
            match holder {
                Some(holder) if age < duration && renewed_lately => {
                    live.insert(holder);
                }
                _ if age > FORGET_REPLICA_AFTER => forgotten.push(name.clone()),
                _ => {}
            }
        }
        for name in forgotten {
            let _ = self.api.delete(&name, &DeleteParams::default()).await;
        }

        for shard in 0..self.settings.shards {
            let name = self.shard_lease(shard);
            let lease = by_name.get(&name);
            let read = lease.map(|lease| ShardLease {
                holder: lease
                    .spec
                    .as_ref()
                    .and_then(|s| s.holder_identity.as_deref())
                    .filter(|h| !h.is_empty()),
                // Every listed Lease was observed above; `now` would never count as expired.
                unchanged_since: self.observed.get(&name).map_or(now, |o| o.since),
                duration: self.lease_duration(lease),
            });
            let replica = ReplicaView {
                identity: &identity,
                renewed: self.held.get(&shard).map(|(renewed, _)| *renewed),
                preferred: preferred_holder(shard, &live) == Some(identity.as_str()),
                renew_every: self.renew_every(),
            };
            match (decide_shard(read.as_ref(), &replica, now), lease) {
                (ShardAction::Create, _) => self.acquire(shard, None, true).await,
                (ShardAction::Take, Some(lease)) => {
                    self.acquire(shard, Some(lease.clone()), true).await;
                }
                (ShardAction::Renew, Some(lease)) => {
                    self.acquire(shard, Some(lease.clone()), false).await;
                }
                (ShardAction::Release, Some(lease)) => self.release(shard, lease.clone()).await,
                _ => {}
            }
        }
    }

    fn lease_duration(&self, lease: &Lease) -> Duration {
        lease
            .spec
            .as_ref()
            .and_then(|s| s.lease_duration_seconds)
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.lease_span(), Duration::from_secs)
    }

    /// Creates, takes over or renews a shard Lease; a conflict means another replica won.
    async fn acquire(&mut self, shard: u32, current: Option<Lease>, taking: bool) {
        let sent = Instant::now();
        let name = self.shard_lease(shard);
        match self.write(&name, current, taking).await {
            Ok(lease) => {
                if taking {
                    tracing::info!(shard, lease = name, "shard acquired");
                }
                self.held.insert(shard, (sent, lease));
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                // Someone else changed it first; it is theirs.
                if self.held.remove(&shard).is_some() {
                    tracing::warn!(shard, "shard lease taken by another replica");
                }
            }
            Err(error) => tracing::warn!(shard, %error, "shard lease update failed"),
        }
    }

    /// Creates the Lease held by this replica, or renews (or takes over) `current`; a changed
    /// `current` fails with 409.
    async fn write(
        &self,
        name: &str,
        current: Option<Lease>,
        taking: bool,
    ) -> Result<Lease, kube::Error> {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let Some(mut lease) = current else {
            return self
                .api
                .create(&PostParams::default(), &self.new_lease(name, now))
                .await;
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if taking {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(self.settings.identity.clone());
        spec.renew_time = Some(now);
        spec.lease_duration_seconds = Some(self.lease_seconds());
        self.api.replace(name, &PostParams::default(), &lease).await
    }

    fn new_lease(&self, name: &str, now: MicroTime) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                labels: Some(
                    [(GROUP_LABEL.to_string(), self.settings.group.clone())]
                        .into_iter()
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.settings.identity.clone()),
                lease_duration_seconds: Some(self.lease_seconds()),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        }
    }

    /// Stops syncing the shard first, then frees its Lease for the next holder.
    async fn release(&mut self, shard: u32, mut lease: Lease) {
        self.held.remove(&shard);
        self.publish();
        // The shard's workers stop before its Lease is freed.
        let stopped = self.running.wait_for(|running| !running.contains(&shard));
        if tokio::time::timeout(Duration::from_secs(5), stopped)
            .await
            .is_err()
        {
            // Not freed: the Lease expires instead, by when the workers have long stopped.
            tracing::warn!(
                shard,
                "the shard's workers did not stop in 5 s; letting its Lease expire"
            );
            return;
        }
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = None;
        match self
            .api
            .replace(&self.shard_lease(shard), &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!(shard, "shard released"),
            Err(error) => tracing::warn!(shard, %error, "releasing a shard failed; it expires"),
        }
    }

    async fn release_all(&mut self) {
        let held: Vec<(u32, Lease)> = self
            .held
            .iter()
            .map(|(shard, (_, lease))| (*shard, lease.clone()))
            .collect();
        for (shard, lease) in held {
            self.release(shard, lease).await;
        }
        let _ = self
            .api
            .delete(&self.replica_lease(), &DeleteParams::default())
            .await;
    }
}
