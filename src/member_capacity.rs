//! A member cluster's capacity as Karmada's cluster status controller summarises it for its
//! general estimator: the Nodes' `status.allocatable`, what the scheduled Pods request
//! (`requested`, Karmada's `allocated`) and what the pending ones request (`allocating`).
//! Read by listing Nodes and the Pods that are not finished, only while some policy of the
//! current plan divides replicas by capacity (see the agent).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::ListParams;
use serde_json::{Value, json};

use crate::hub::MemberCredentials;
use crate::placement::capacity::{ClusterResources, Quantity, ReplicaRequirements};
use crate::placement::types::SecretKeyRef;

/// Pods listed per request (a large cluster is read in pages).
const PAGE: u32 = 500;
/// How often a member's capacity is read while a plan needs it, and how long a read may take.
pub const CAPACITY_INTERVAL: Duration = Duration::from_secs(10);

/// One member's capacity, read anew.
#[derive(Debug, Clone)]
pub struct CapacityReport {
    /// The cluster.
    pub cluster: String,
    /// Its summary.
    pub resources: ClusterResources,
}

/// Reads one member's capacity every [`CAPACITY_INTERVAL`] while `wanted` is set, and reports
/// each summary that differs from the last one sent. Runs until the task is aborted.
pub async fn probe_capacity(
    cluster: String,
    secret: Option<SecretKeyRef>,
    credentials: MemberCredentials,
    wanted: std::sync::Arc<std::sync::atomic::AtomicBool>,
    reports: tokio::sync::mpsc::Sender<CapacityReport>,
) {
    let mut ticker = tokio::time::interval(CAPACITY_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut client: Option<kube::Client> = None;
    let mut last: Option<ClusterResources> = None;
    loop {
        ticker.tick().await;
        if !wanted.load(std::sync::atomic::Ordering::Relaxed) {
            continue;
        }
        if client.is_none() {
            match credentials.connect(&cluster, secret.as_ref()).await {
                Ok((member, _)) => client = Some(member.client().clone()),
                Err(error) => {
                    tracing::debug!(cluster, %error, "capacity: cannot connect");
                    continue;
                }
            }
        }
        let Some(connected) = &client else { continue };
        match read(connected, CAPACITY_INTERVAL).await {
            Ok(resources) if last.as_ref() != Some(&resources) => {
                last = Some(resources.clone());
                let report = CapacityReport {
                    cluster: cluster.clone(),
                    resources,
                };
                if reports.send(report).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(cluster, %error, "capacity: cannot read Nodes and Pods");
                client = None;
            }
        }
    }
}

/// Reads one member's Nodes and Pods and sums them as [`summarize`] does.
pub async fn read(client: &kube::Client, timeout: Duration) -> Result<ClusterResources, String> {
    let listing = async {
        let nodes: Api<Node> = Api::all(client.clone());
        let nodes = nodes
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("listing Nodes: {e}"))?;
        let pods: Api<Pod> = Api::all(client.clone());
        let mut all_pods = Vec::new();
        let mut params = ListParams::default()
            .fields("status.phase!=Succeeded,status.phase!=Failed")
            .limit(PAGE);
        loop {
            let page = pods
                .list(&params)
                .await
                .map_err(|e| format!("listing Pods: {e}"))?;
            let next = page.metadata.continue_.clone().filter(|c| !c.is_empty());
            all_pods.extend(page.items);
            match next {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        let nodes: Vec<Value> = nodes
            .items
            .iter()
            .filter_map(|n| serde_json::to_value(n).ok())
            .collect();
        let pods: Vec<Value> = all_pods
            .iter()
            .filter_map(|p| serde_json::to_value(p).ok())
            .collect();
        Ok::<_, String>(summarize(&nodes, &pods))
    };
    tokio::time::timeout(timeout, listing)
        .await
        .map_err(|_| format!("reading Nodes and Pods took over {timeout:?}"))?
}

/// Sums Nodes and Pods (as JSON) the way Karmada's resource summary does: every Node's
/// allocatable; each unfinished Pod's effective requests (as a workload template's, see
/// [`ReplicaRequirements::from_template`]) and one `pods`, as `requested` when it is bound to a
/// node and `allocating` while it waits for one.
pub fn summarize(nodes: &[Value], pods: &[Value]) -> ClusterResources {
    let mut allocatable: BTreeMap<String, i128> = BTreeMap::new();
    for node in nodes {
        let Some(resources) = node
            .pointer("/status/allocatable")
            .and_then(Value::as_object)
        else {
            continue;
        };
        for (name, quantity) in resources {
            let Some(quantity) = quantity.as_str().and_then(|q| Quantity::parse(q).ok()) else {
                continue;
            };
            *allocatable.entry(name.clone()).or_insert(0) += units(name, &quantity);
        }
    }
    let mut requested: BTreeMap<String, i128> = BTreeMap::new();
    let mut allocating: BTreeMap<String, i128> = BTreeMap::new();
    for pod in pods {
        let phase = pod.pointer("/status/phase").and_then(Value::as_str);
        if matches!(phase, Some("Succeeded" | "Failed")) {
            continue;
        }
        let spec = pod.get("spec").cloned().unwrap_or(Value::Null);
        let bound = spec
            .get("nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
        let sums = if bound {
            &mut requested
        } else {
            &mut allocating
        };
        // A Pod's spec is a template's `spec.template.spec`: one reading of requests.
        let template = json!({"spec": {"template": {"spec": spec}}});
        if let Ok(requirements) = ReplicaRequirements::from_template(&template) {
            for (name, value) in requirements.requests {
                *sums.entry(name).or_insert(0) += value;
            }
        }
        *sums.entry("pods".into()).or_insert(0) += 1;
    }
    ClusterResources {
        allocatable: quantities(allocatable),
        requested: quantities(requested),
        allocating: quantities(allocating),
    }
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

fn quantities(units: BTreeMap<String, i128>) -> BTreeMap<String, Quantity> {
    units
        .into_iter()
        .filter_map(|(name, value)| {
            let text = if name == "cpu" {
                format!("{value}m")
            } else {
                value.to_string()
            };
            Quantity::parse(&text).ok().map(|q| (name, q))
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
