//! A member cluster's capacity as Karmada's cluster status controller summarises it for its
//! general estimator: the Nodes' `status.allocatable`, what the scheduled Pods request
//! (`requested`, Karmada's `allocated`) and what the pending ones request (`allocating`).
//! Kept current from watches on Nodes and unfinished Pods, folded into running sums (each
//! event costs the object it names, never a pass over the cluster), and only while some policy
//! of the current plan divides replicas by capacity (see the agent).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Resource, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use crate::cluster::hub::MemberCredentials;
use crate::error::chain;
use crate::placement::capacity::{ClusterResources, Quantity, ReplicaRequirements};
use crate::placement::types::SecretKeyRef;

/// At most one report per this long: pods come and go in bursts (a rollout), and the agent
/// needs the summary after the burst, not every step of it.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Connecting again to a member that could not be connected to: 1 s doubling to 10 s, with
/// jitter, for as long as its capacity is wanted. Every error is retried: a missing Secret may
/// appear, and nothing else here watches for it.
fn reconnect_policy() -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(10))
        .without_max_times()
        .with_jitter()
}
/// Pods that hold no resources any more; the apiserver filters them out of the watch (a pod
/// that finishes arrives as deleted).
const UNFINISHED: &str = "status.phase!=Succeeded,status.phase!=Failed";

/// One member's capacity, read anew.
#[derive(Debug, Clone)]
pub struct CapacityReport {
    /// The cluster.
    pub cluster: String,
    /// Its summary.
    pub resources: ClusterResources,
}

/// Watches one member's Nodes and Pods while `wanted` is true, and reports its summary when it
/// differs from the last one sent (at most every [`REPORT_INTERVAL`]). When `wanted` turns
/// false the watches end; they start again (with a fresh list) when it turns true. Runs until
/// the task is aborted, `wanted`'s sender is dropped or nobody receives the reports.
pub async fn probe_capacity(
    cluster: String,
    secret: Option<SecretKeyRef>,
    credentials: MemberCredentials,
    mut wanted: watch::Receiver<bool>,
    reports: mpsc::Sender<CapacityReport>,
) {
    loop {
        if wanted.wait_for(|wanted| *wanted).await.is_err() {
            return;
        }
        let connect = || credentials.connect(&cluster, secret.as_ref());
        let connected = connect.retry(reconnect_policy()).notify(|error, after| {
            let error = chain(error);
            tracing::debug!(cluster, error, ?after, "capacity: cannot connect");
        });
        // Connecting stops as soon as capacity is no longer wanted.
        let client = tokio::select! {
            unwanted = wanted.wait_for(|wanted| !*wanted) => {
                if unwanted.is_err() {
                    return;
                }
                continue;
            }
            connected = connected => match connected {
                Ok((member, _)) => member.client().clone(),
                // Only should the policy ever limit its retries: start over.
                Err(_) => continue,
            },
        };
        tokio::select! {
            unwanted = wanted.wait_for(|wanted| !*wanted) => {
                if unwanted.is_err() {
                    return;
                }
                tracing::debug!(cluster, "capacity: no policy divides by capacity; watches stop");
            }
            () = follow(&cluster, client, &reports) => return,
        }
    }
}

/// Folds the Node and Pod watches into a summary and reports it; returns when nobody
/// receives reports any more. Watch errors are retried by the watchers, with backoff.
async fn follow(cluster: &str, client: kube::Client, reports: &mpsc::Sender<CapacityReport>) {
    let nodes = watcher::watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff();
    let pods = watcher::watcher(
        Api::<Pod>::all(client),
        watcher::Config::default().fields(UNFINISHED),
    )
    .default_backoff();
    let mut nodes = std::pin::pin!(nodes);
    let mut pods = std::pin::pin!(pods);
    let mut node_fold = Fold::default();
    let mut pod_fold = Fold::default();
    let mut ticker = tokio::time::interval(REPORT_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<ClusterResources> = None;
    loop {
        tokio::select! {
            Some(event) = nodes.next() => match event {
                Ok(event) => node_fold.apply(event, |node| to_json(node).map(|n| node_part(&n))),
                Err(error) => tracing::warn!(cluster, %error, "capacity: watching Nodes"),
            },
            Some(event) = pods.next() => match event {
                Ok(event) => pod_fold.apply(event, |pod| to_json(pod).and_then(|p| pod_part(&p))),
                Err(error) => tracing::warn!(cluster, %error, "capacity: watching Pods"),
            },
            _ = ticker.tick() => {
                // A summary before both lists are complete would undercount.
                if !(node_fold.synced && pod_fold.synced) {
                    continue;
                }
                let resources = summary(&node_fold.totals, &pod_fold.totals);
                if last.as_ref() == Some(&resources) {
                    continue;
                }
                last = Some(resources.clone());
                let report = CapacityReport { cluster: cluster.to_string(), resources };
                if reports.send(report).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn to_json<K: serde::Serialize>(object: &K) -> Option<Value> {
    serde_json::to_value(object).ok()
}

/// Where an object's resources count: Karmada's `allocatable`, `allocated` or `allocating`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Allocatable = 0,
    Requested = 1,
    Allocating = 2,
}

/// What one Node or Pod adds to the summary, in Karmada's units (milli-cpu, whole units else).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Contribution {
    part: Part,
    amounts: BTreeMap<String, i128>,
}

/// Running sums per [`Part`].
type Totals = [BTreeMap<String, i128>; 3];

fn add(totals: &mut Totals, contribution: &Contribution, sign: i128) {
    let sums = &mut totals[contribution.part as usize];
    for (name, amount) in &contribution.amounts {
        let entry = sums.entry(name.clone()).or_insert(0);
        *entry += sign * amount;
        if *entry == 0 {
            sums.remove(name);
        }
    }
}

/// One watch's objects, by namespace and name, with their running sums. A relist (the
/// watcher's `Init` .. `InitDone`) replaces everything at once, so objects deleted while the
/// watch was broken drop out.
#[derive(Default)]
struct Fold {
    live: HashMap<String, Contribution>,
    relisting: Option<HashMap<String, Contribution>>,
    totals: Totals,
    /// The first list is complete.
    synced: bool,
}

impl Fold {
    fn apply<K: Resource>(&mut self, event: Event<K>, read: impl Fn(&K) -> Option<Contribution>) {
        let key = |object: &K| {
            format!(
                "{}/{}",
                object.namespace().unwrap_or_default(),
                object.name_any()
            )
        };
        match event {
            Event::Init => self.relisting = Some(HashMap::new()),
            Event::InitApply(object) => {
                if let (Some(buffer), Some(contribution)) = (&mut self.relisting, read(&object)) {
                    buffer.insert(key(&object), contribution);
                }
            }
            Event::InitDone => {
                if let Some(buffer) = self.relisting.take() {
                    self.live = buffer;
                    self.totals = Totals::default();
                    for contribution in self.live.values() {
                        add(&mut self.totals, contribution, 1);
                    }
                }
                self.synced = true;
            }
            Event::Apply(object) => {
                let name = key(&object);
                if let Some(old) = self.live.remove(&name) {
                    add(&mut self.totals, &old, -1);
                }
                if let Some(new) = read(&object) {
                    add(&mut self.totals, &new, 1);
                    self.live.insert(name, new);
                }
            }
            Event::Delete(object) => {
                if let Some(old) = self.live.remove(&key(&object)) {
                    add(&mut self.totals, &old, -1);
                }
            }
        }
    }
}

/// A Node's allocatable resources.
fn node_part(node: &Value) -> Contribution {
    let mut amounts = BTreeMap::new();
    if let Some(resources) = node
        .pointer("/status/allocatable")
        .and_then(Value::as_object)
    {
        for (name, quantity) in resources {
            if let Some(quantity) = quantity.as_str().and_then(|q| Quantity::parse(q).ok()) {
                *amounts.entry(name.clone()).or_insert(0) += units(name, &quantity);
            }
        }
    }
    Contribution {
        part: Part::Allocatable,
        amounts,
    }
}

/// An unfinished Pod's effective requests (as a workload template's, see
/// [`ReplicaRequirements::from_template`]) and one `pods`: `requested` when it is bound to a
/// node, `allocating` while it waits for one. `None` for a finished Pod.
fn pod_part(pod: &Value) -> Option<Contribution> {
    let phase = pod.pointer("/status/phase").and_then(Value::as_str);
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return None;
    }
    let spec = pod.get("spec").cloned().unwrap_or(Value::Null);
    let bound = spec
        .get("nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    // A Pod's spec is a template's `spec.template.spec`: one reading of requests.
    let template = json!({"spec": {"template": {"spec": spec}}});
    let mut amounts = ReplicaRequirements::from_template(&template)
        .map(|r| r.requests)
        .unwrap_or_default();
    *amounts.entry("pods".into()).or_insert(0) += 1;
    Some(Contribution {
        part: if bound {
            Part::Requested
        } else {
            Part::Allocating
        },
        amounts,
    })
}

/// The summary of a Node fold's and a Pod fold's sums.
fn summary(nodes: &Totals, pods: &Totals) -> ClusterResources {
    ClusterResources {
        allocatable: quantities(&nodes[Part::Allocatable as usize]),
        requested: quantities(&pods[Part::Requested as usize]),
        allocating: quantities(&pods[Part::Allocating as usize]),
    }
}

/// Sums Nodes and Pods (as JSON) the way Karmada's resource summary does: every Node's
/// allocatable; each unfinished Pod's effective requests and one `pods`, as `requested` when
/// it is bound to a node and `allocating` while it waits for one. The watches fold the same
/// parts one event at a time.
pub fn summarize(nodes: &[Value], pods: &[Value]) -> ClusterResources {
    let mut totals = Totals::default();
    for part in nodes
        .iter()
        .map(node_part)
        .chain(pods.iter().filter_map(pod_part))
    {
        add(&mut totals, &part, 1);
    }
    summary(&totals, &totals)
}

/// Whether a cluster's nodes offer noticeably more or less than before: any resource's
/// allocatable moved by a tenth or more (a node added or removed, a pool scaled). Pods
/// coming and going (the workloads' own among them) never count, so a division cannot chase
/// its own replicas.
pub fn allocatable_changed(before: &ClusterResources, after: &ClusterResources) -> bool {
    let names = before.allocatable.keys().chain(after.allocatable.keys());
    names.into_iter().any(|name| {
        let get = |resources: &ClusterResources| {
            resources
                .allocatable
                .get(name)
                .map(|q| units(name, q))
                .unwrap_or(0)
        };
        let (old, new) = (get(before), get(after));
        (new - old).abs() * 10 >= old.max(1)
    })
}

/// A quantity in Karmada's units for its resource: milli-cores for `cpu`, whole units else.
fn units(name: &str, quantity: &Quantity) -> i128 {
    if name == "cpu" {
        quantity.milli_value()
    } else {
        quantity.value()
    }
}

fn quantities(units: &BTreeMap<String, i128>) -> BTreeMap<String, Quantity> {
    units
        .iter()
        .filter_map(|(name, &value)| {
            let text = if name == "cpu" {
                format!("{value}m")
            } else {
                value.to_string()
            };
            Quantity::parse(&text).ok().map(|q| (name.clone(), q))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(cpu: &str, memory: &str, pods: &str) -> Value {
        json!({"status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": pods}}})
    }

    fn pod(node: Option<&str>, phase: &str, cpu: &str) -> Value {
        json!({
            "spec": {"nodeName": node, "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": "1Gi"}}}]},
            "status": {"phase": phase}
        })
    }

    #[test]
    fn nodes_and_pods_sum_as_karmadas_resource_summary() {
        let resources = summarize(
            &[node("8", "32Gi", "110"), node("7500m", "16Gi", "110")],
            &[
                pod(Some("n1"), "Running", "500m"),
                pod(Some("n2"), "Running", "1"),
                pod(None, "Pending", "2"),
                pod(Some("n1"), "Succeeded", "4"),
            ],
        );
        let get = |map: &BTreeMap<String, Quantity>, name: &str| {
            map.get(name).map(|q| units(name, q)).unwrap_or(0)
        };
        assert_eq!(get(&resources.allocatable, "cpu"), 15_500);
        assert_eq!(get(&resources.allocatable, "memory"), 48 << 30);
        assert_eq!(get(&resources.allocatable, "pods"), 220);
        assert_eq!(get(&resources.requested, "cpu"), 1_500);
        assert_eq!(get(&resources.requested, "pods"), 2);
        assert_eq!(get(&resources.allocating, "cpu"), 2_000);
        assert_eq!(get(&resources.allocating, "pods"), 1);
    }

    fn typed<K: serde::de::DeserializeOwned>(name: &str, value: Value) -> K {
        let mut value = value;
        value["metadata"] = json!({"name": name, "namespace": "ns"});
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn watch_events_fold_into_the_summary_of_a_list() {
        let read_pod = |p: &Pod| to_json(p).and_then(|p| pod_part(&p));
        let read_node = |n: &Node| to_json(n).map(|n| node_part(&n));
        let (mut nodes, mut pods) = (Fold::default(), Fold::default());
        let both = |nodes: &Fold, pods: &Fold| summary(&nodes.totals, &pods.totals);
        nodes.apply(Event::Init, read_node);
        nodes.apply(
            Event::InitApply(typed("n1", node("8", "32Gi", "110"))),
            read_node,
        );
        assert!(!nodes.synced, "no summary before the list is complete");
        nodes.apply(Event::InitDone, read_node);
        pods.apply(Event::Init, read_pod);
        pods.apply(
            Event::InitApply(typed("p1", pod(Some("n1"), "Running", "1"))),
            read_pod,
        );
        pods.apply(Event::InitDone, read_pod);
        assert!(nodes.synced && pods.synced);
        // Events in any order end where a list of the same objects ends.
        nodes.apply(
            Event::Apply(typed("n2", node("4", "8Gi", "110"))),
            read_node,
        );
        pods.apply(
            Event::Apply(typed("p2", pod(None, "Pending", "2"))),
            read_pod,
        );
        pods.apply(
            Event::Apply(typed("p2", pod(Some("n2"), "Running", "2"))),
            read_pod,
        );
        pods.apply(
            Event::Apply(typed("p3", pod(Some("n2"), "Running", "500m"))),
            read_pod,
        );
        pods.apply(
            Event::Apply(typed("p3", pod(Some("n2"), "Succeeded", "500m"))),
            read_pod,
        );
        nodes.apply(
            Event::Apply(typed("n3", node("4", "8Gi", "110"))),
            read_node,
        );
        nodes.apply(
            Event::Delete(typed("n3", node("4", "8Gi", "110"))),
            read_node,
        );
        let lists = [
            (
                vec![node("8", "32Gi", "110"), node("4", "8Gi", "110")],
                vec![
                    pod(Some("n1"), "Running", "1"),
                    pod(Some("n2"), "Running", "2"),
                ],
            ),
            (
                vec![node("4", "8Gi", "110")],
                vec![pod(Some("n2"), "Running", "2")],
            ),
        ];
        assert_eq!(both(&nodes, &pods), summarize(&lists[0].0, &lists[0].1));
        // A relist replaces everything: what was deleted meanwhile drops out.
        pods.apply(Event::Init, read_pod);
        pods.apply(
            Event::InitApply(typed("p2", pod(Some("n2"), "Running", "2"))),
            read_pod,
        );
        pods.apply(Event::InitDone, read_pod);
        nodes.apply(
            Event::Delete(typed("n1", node("8", "32Gi", "110"))),
            read_node,
        );
        assert_eq!(both(&nodes, &pods), summarize(&lists[1].0, &lists[1].1));
    }

    /// A member that cannot be connected to is tried again, with backoff, for as long as its
    /// capacity is wanted; the task ends when nobody wants it any more.
    #[tokio::test(start_paused = true)]
    async fn connecting_is_retried_while_wanted_and_ends_with_the_wanting() {
        let credentials = MemberCredentials::Kubeconfig(std::path::PathBuf::from(
            "/nonexistent/flotilla-capacity-test/kubeconfig",
        ));
        let (wanted_tx, wanted) = watch::channel(true);
        let (reports_tx, mut reports) = mpsc::channel(1);
        let task = tokio::spawn(probe_capacity(
            "member-a".into(),
            None,
            credentials,
            wanted,
            reports_tx,
        ));
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(!task.is_finished(), "still trying after 10 minutes");
        let _ = wanted_tx.send(false);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!task.is_finished(), "waits to be wanted again");
        drop(wanted_tx);
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("ends once nobody can want it")
            .expect("no panic");
        assert!(reports.try_recv().is_err(), "nothing to report");
    }

    #[test]
    fn only_a_tenth_of_allocatable_is_a_change() {
        let nodes = |count: usize| vec![node("8", "32Gi", "110"); count];
        let three = summarize(&nodes(3), &[]);
        let four = summarize(&nodes(4), &[]);
        let busy = summarize(&nodes(3), &[pod(Some("n"), "Running", "8")]);
        let slightly = summarize(
            &[
                node("8", "32Gi", "110"),
                node("8", "32Gi", "110"),
                node("8500m", "32Gi", "110"),
            ],
            &[],
        );
        assert!(allocatable_changed(&three, &four));
        assert!(allocatable_changed(&four, &three));
        assert!(!allocatable_changed(&three, &busy), "pods never count");
        assert!(!allocatable_changed(&three, &slightly));
        assert!(allocatable_changed(&ClusterResources::default(), &three));
    }
}
