//! Watches of the objects Flotilla manages in a member cluster: every managed kind is watched
//! (by the inventory label), and each event is folded into the drift and workload-health
//! reports its cluster's worker acts on. What counts as drift is [`crate::drift`]'s to say;
//! this module only feeds it the objects as they change.
//!
//! Each watch is kube's [`watcher`](kube::runtime::watcher), with its default backoff: a LIST,
//! then a watch from its resourceVersion. The LIST is a consistent read, on every version
//! (1.20 included): the first state seen of an object is its baseline, and it must be the
//! current one. kube's streaming list is not used for that reason: it asks for the initial
//! objects at resourceVersion 0, which the apiserver may answer from a cache that has not yet
//! seen a controller's write right after Flotilla's apply (the Deployment controller's revision
//! annotation filling an empty map Flotilla applied), which would then read as drift.

use std::collections::HashMap;

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, TypeMeta};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::apply::INVENTORY_LABEL;
use crate::drift::{Baseline, DELETED, DRIFT_ANNOTATION, Drift, Lost, lost_fields};
use crate::object::ObjectRef;
use crate::workload::WorkloadHealth;

/// A managed kind to watch in one cluster.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct WatchedKind {
    /// `apps/v1`.
    pub api_version: String,
    /// `Deployment`.
    pub kind: String,
    /// `deployments`.
    pub plural: String,
}

/// What a watch tells its cluster's worker.
#[derive(Debug, Clone)]
pub enum WatchReport {
    /// A managed object drifted.
    Drift(Drift),
    /// A managed workload's health changed; `None` when it is gone or has no health rule.
    Health {
        /// The object.
        object: ObjectRef,
        /// Its health from its status.
        health: Option<WorkloadHealth>,
    },
}

/// Watches one kind in one cluster and sends a [`Drift`] for every managed object whose
/// Flotilla-owned fields moved to another manager, or that was deleted, and each workload's
/// health as its status changes. Runs until the receiver is gone; reconnects (from scratch
/// after 410 Gone) when the watch ends.
pub async fn watch_kind(
    client: kube::Client,
    cluster: String,
    sync_name: String,
    watched: WatchedKind,
    reports: mpsc::Sender<WatchReport>,
) {
    let (group, version) = crate::object::split_api_version(&watched.api_version);
    let resource = ApiResource {
        group: group.to_string(),
        version: version.to_string(),
        api_version: watched.api_version.clone(),
        kind: watched.kind.clone(),
        plural: watched.plural.clone(),
    };
    let api: Api<DynamicObject> = Api::all_with(client, &resource);
    let config = watcher::Config::default()
        .labels(&format!("{INVENTORY_LABEL}={sync_name}"))
        // Ended by the server before the client's 30 s read timeout would cut it.
        .timeout(25);
    let mut fold = KindFold::new(cluster, watched);
    // The watcher resumes from the last resourceVersion it saw, starts over from a fresh list
    // after 410 Gone, and backs off after errors.
    let events = watcher::watcher(api, config).default_backoff();
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            // Expired: the watcher lists again, as it should.
            Err(watcher::Error::WatchError(status)) if status.code == 410 => {
                tracing::debug!(
                    cluster = fold.cluster,
                    kind = fold.watched.kind,
                    "watch expired; listing again"
                );
                continue;
            }
            Err(error) => {
                tracing::warn!(
                    cluster = fold.cluster,
                    kind = fold.watched.kind,
                    %error,
                    "watch failed; retrying"
                );
                continue;
            }
        };
        let (object, deleted) = match event {
            Event::Apply(object) | Event::InitApply(object) => (object, false),
            Event::Delete(object) => (object, true),
            // A fresh list starts or is complete: its objects arrive as InitApply.
            Event::Init | Event::InitDone => continue,
        };
        for report in fold.observe(object, deleted) {
            if reports.send(report).await.is_err() {
                return;
            }
        }
    }
}

/// What one kind's watch remembers of its objects, to tell drift and health changes from
/// repeats. No I/O: [`KindFold::observe`] turns each event into the reports it makes.
struct KindFold {
    cluster: String,
    watched: WatchedKind,
    /// Flotilla's fields per object uid, as last seen without drift.
    baselines: HashMap<String, Baseline>,
    /// The drift last sent per uid: the same drift is sent once, not on every status update.
    reported: HashMap<String, Vec<String>>,
    /// The health last sent per uid: sent again only when it changes.
    healths: HashMap<String, Option<WorkloadHealth>>,
}

impl KindFold {
    fn new(cluster: String, watched: WatchedKind) -> Self {
        KindFold {
            cluster,
            watched,
            baselines: HashMap::new(),
            reported: HashMap::new(),
            healths: HashMap::new(),
        }
    }

    /// The reports one object's event makes (`deleted`: it is gone): its health when that
    /// changed, then its drift when that is new.
    fn observe(&mut self, mut object: DynamicObject, deleted: bool) -> Vec<WatchReport> {
        let mut out = Vec::new();
        // The items of a LIST carry no apiVersion and kind (watch events do); the health rules
        // go by them.
        object.types.get_or_insert_with(|| TypeMeta {
            api_version: self.watched.api_version.clone(),
            kind: self.watched.kind.clone(),
        });
        let uid = object.metadata.uid.clone().unwrap_or_default();
        let report_only = object
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(DRIFT_ANNOTATION))
            .is_some_and(|mode| mode == "report");
        let (group, version) = crate::object::split_api_version(&self.watched.api_version);
        let object_ref = ObjectRef {
            group: group.to_string(),
            version: version.to_string(),
            kind: self.watched.kind.clone(),
            namespace: object.metadata.namespace.clone().unwrap_or_default(),
            name: object.metadata.name.clone().unwrap_or_default(),
        };
        let value = serde_json::to_value(&object).unwrap_or(Value::Null);
        let health = if deleted {
            self.healths.remove(&uid);
            None
        } else {
            crate::workload::assess(&value)
        };
        // Sent when it changed; a deletion clears what was sent.
        let changed = health.is_some() && self.healths.get(&uid) != Some(&health);
        if deleted || changed {
            if !deleted {
                self.healths.insert(uid.clone(), health.clone());
            }
            out.push(WatchReport::Health {
                object: object_ref.clone(),
                health,
            });
        }
        let drift = if deleted {
            self.reported.remove(&uid);
            self.baselines.remove(&uid).map(|_| Lost {
                fields: vec![DELETED.to_string()],
                ..Lost::default()
            })
        } else {
            self.drift_of(uid, &value)
        };
        if let Some(Lost {
            fields,
            managers,
            replicas_seen,
        }) = drift
        {
            out.push(WatchReport::Drift(Drift {
                cluster: self.cluster.clone(),
                object: object_ref,
                fields,
                deleted,
                managers,
                report_only,
                replicas_seen,
                note: None,
            }));
        }
        out
    }

    /// The drift of a live object not sent yet; an object without drift becomes its own
    /// baseline.
    fn drift_of(&mut self, uid: String, value: &Value) -> Option<Lost> {
        let drift = self
            .baselines
            .get(&uid)
            .map(|baseline| lost_fields(baseline, value))
            .filter(|lost| !lost.fields.is_empty());
        // The same drift is sent once; an unrecorded replicas value, once per value.
        let sent_as = drift.as_ref().map(|lost| {
            let mut key = lost.fields.clone();
            key.extend(lost.replicas_seen.iter().map(|r| format!("replicas={r}")));
            key
        });
        match (drift, sent_as) {
            // Until Flotilla owns its fields again (a correction), the baseline stays.
            (Some(_), Some(key)) if self.reported.get(&uid) == Some(&key) => None,
            (Some(drift), Some(key)) => {
                self.reported.insert(uid, key);
                Some(drift)
            }
            _ => {
                self.reported.remove(&uid);
                self.baselines.insert(uid, Baseline::of(value));
                None
            }
        }
    }
}

/// Running watches; dropping them stops them (a worker that is aborted stops its watches too).
#[derive(Default)]
pub struct Watches(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Watches {
    fn drop(&mut self) {
        for handle in &self.0 {
            handle.abort();
        }
    }
}

/// Watches several kinds until the returned [`Watches`] are dropped.
pub fn watch_kinds(
    client: &kube::Client,
    cluster: &str,
    sync_name: &str,
    kinds: &[WatchedKind],
    reports: &mpsc::Sender<WatchReport>,
) -> Watches {
    Watches(
        kinds
            .iter()
            .map(|watched| {
                tokio::spawn(watch_kind(
                    client.clone(),
                    cluster.to_string(),
                    sync_name.to_string(),
                    watched.clone(),
                    reports.clone(),
                ))
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A Deployment as a LIST item (no apiVersion or kind), with 2 of 2 replicas available,
    /// whose `spec.replicas` is owned by `replicas_owner`.
    fn listed_deployment(replicas_owner: &str) -> DynamicObject {
        let mut managed = vec![json!({"manager": "flotilla", "operation": "Apply",
            "time": "2026-11-22T09:00:00Z", "fieldsV1": {"f:spec": {"f:template": {}}}})];
        managed.push(json!({"manager": replicas_owner,
            "operation": if replicas_owner == "flotilla" { "Apply" } else { "Update" },
            "time": "2026-11-22T10:00:00Z", "fieldsV1": {"f:spec": {"f:replicas": {}}}}));
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u-1", "generation": 1,
                         "managedFields": managed},
            "spec": {"replicas": 2},
            "status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
                       "readyReplicas": 2, "availableReplicas": 2}
        }))
        .expect("a Deployment")
    }

    #[test]
    fn a_watch_reports_health_once_drift_once_and_a_deletion() {
        let watched = WatchedKind {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            plural: "deployments".into(),
        };
        let mut fold = KindFold::new("member-a".into(), watched);
        // Listed: its health (the kind comes from the watch, not the item), and it becomes the
        // baseline.
        let first = fold.observe(listed_deployment("flotilla"), false);
        let [WatchReport::Health { object, health }] = first.as_slice() else {
            panic!("{first:?}");
        };
        assert_eq!(object.to_string(), "Deployment.apps shop/web");
        assert!(health.is_some());
        // The same again: nothing new.
        assert!(
            fold.observe(listed_deployment("flotilla"), false)
                .is_empty()
        );
        // `kubectl scale` takes spec.replicas: drift, sent once.
        let scaled = fold.observe(listed_deployment("kubectl"), false);
        let [WatchReport::Drift(drift)] = scaled.as_slice() else {
            panic!("{scaled:?}");
        };
        assert_eq!(
            (drift.cluster.as_str(), drift.fields.as_slice()),
            ("member-a", ["spec.replicas".to_string()].as_slice())
        );
        assert_eq!(drift.managers, ["kubectl"]);
        assert!(fold.observe(listed_deployment("kubectl"), false).is_empty());
        // Deleted: its health is cleared and the deletion is drift.
        let deleted = fold.observe(listed_deployment("kubectl"), true);
        let [
            WatchReport::Health { health: None, .. },
            WatchReport::Drift(Drift {
                fields, deleted, ..
            }),
        ] = deleted.as_slice()
        else {
            panic!("{deleted:?}");
        };
        assert_eq!(fields, &["deleted"]);
        assert!(deleted);
    }
}
