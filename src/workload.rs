//! Workload health: whether an object as the apiserver returned it is still converging, up, or
//! failed, read from its `status` the way Argo CD's health checks and kstatus read it.
//!
//! Pure: [`assess`] looks only at the JSON it is given and does no I/O. Status is written by
//! controllers, not by us, so nothing here trusts its shape: a missing count is 0, a value of
//! the wrong type is treated as absent, and nothing panics.
//!
//! | kind | rule |
//! |---|---|
//! | `apps` Deployment | deadline exceeded or replica failure → Degraded; rollout unfinished → Progressing |
//! | `apps` StatefulSet | pods not ready or revisions not converged → Progressing |
//! | `apps` DaemonSet | pods not updated or not available → Progressing |
//! | `batch` Job | `Failed` → Degraded, `Complete` → Available, else Progressing |
//! | anything else | the `Ready` condition, if there is one |
//!
//! Every rule first checks `status.observedGeneration` against `metadata.generation`: until the
//! controller has seen the latest spec, the rest of the status describes an older one.

use serde::Serialize;
use serde_json::Value;

use crate::kinds::StatusRule;

/// How a workload is doing, from its status.
///
/// Ordered as declared (`Progressing < Available < Degraded`), for stable sorting only; the order
/// is not a severity ranking.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
pub enum HealthState {
    /// Still converging: the controller has not seen the latest spec, a rollout or scale is
    /// under way, or a Job is running.
    Progressing,
    /// Converged: every desired replica is updated and available, or a Job has completed.
    Available,
    /// Failed in a way that waiting will not fix: a rollout past its deadline, pods that cannot
    /// be created, a failed Job, or a `Ready` condition that is `False`.
    Degraded,
}

/// Every [`HealthState`], in order; for emitting a metric series per state (including zeros).
pub const HEALTH_STATES: [HealthState; 3] = [
    HealthState::Progressing,
    HealthState::Available,
    HealthState::Degraded,
];

impl HealthState {
    /// The state's name, as used in metric labels and in its serialized form.
    pub fn as_str(&self) -> &'static str {
        match self {
            HealthState::Progressing => "Progressing",
            HealthState::Available => "Available",
            HealthState::Degraded => "Degraded",
        }
    }
}

/// A workload's health and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct WorkloadHealth {
    /// The overall state.
    pub state: HealthState,
    /// Short human text explaining the state, e.g. `2/3 replicas available`, or a failing
    /// condition's `reason: message`.
    pub reason: String,
}

impl WorkloadHealth {
    fn new(state: HealthState, reason: impl Into<String>) -> Self {
        WorkloadHealth {
            state,
            reason: reason.into(),
        }
    }

    fn progressing(reason: impl Into<String>) -> Self {
        Self::new(HealthState::Progressing, reason)
    }

    fn available(reason: impl Into<String>) -> Self {
        Self::new(HealthState::Available, reason)
    }

    fn degraded(reason: impl Into<String>) -> Self {
        Self::new(HealthState::Degraded, reason)
    }
}

/// Assesses an object's health from its `apiVersion`, `kind`, `metadata.generation`, `spec` and
/// `status`.
///
/// Returns `None` when the kind has no health rule and no `Ready` condition (ConfigMap, Service,
/// ...): such objects are fine once applied, and reporting them as anything would be noise.
pub fn assess(object: &Value) -> Option<WorkloadHealth> {
    // A `status` that is not an object (null, or garbage) carries nothing we can read.
    let status = object.get("status").filter(|status| status.is_object());

    match crate::kinds::workload_of(object).and_then(|workload| workload.status) {
        Some(rule @ (StatusRule::Deployment | StatusRule::StatefulSet | StatusRule::DaemonSet)) => {
            // These controllers always write status; none yet means the controller has not run.
            let Some(status) = status else {
                return Some(WorkloadHealth::progressing("no status yet"));
            };
            if let Some(lag) = generation_lag(object, status) {
                return Some(lag);
            }
            Some(match rule {
                StatusRule::Deployment => deployment(object, status),
                StatusRule::StatefulSet => stateful_set(object, status),
                _ => daemon_set(object, status),
            })
        }
        Some(StatusRule::Job) => {
            // A Job with no status yet is simply one that has not started running.
            let status = status.unwrap_or(&Value::Null);
            if let Some(lag) = generation_lag(object, status) {
                return Some(lag);
            }
            Some(job(status))
        }
        None => {
            // Custom resources: the `Ready` condition is the common convention; without it we
            // know nothing about what "healthy" means for the kind.
            let status = status?;
            let ready = condition(status, "Ready")?;
            if let Some(lag) = generation_lag(object, status) {
                return Some(lag);
            }
            Some(match condition_status(ready) {
                "True" => WorkloadHealth::available(condition_text(ready, "ready")),
                "False" => WorkloadHealth::degraded(condition_text(ready, "not ready")),
                // `Unknown`, missing or nonsense: the controller has not decided yet.
                _ => WorkloadHealth::progressing(condition_text(ready, "readiness unknown")),
            })
        }
    }
}

/// Progressing when the controller has not yet observed the object's latest generation: the
/// rest of its status then describes an older spec and cannot be trusted.
fn generation_lag(object: &Value, status: &Value) -> Option<WorkloadHealth> {
    let generation = int(object.pointer("/metadata/generation"))?;
    let observed = int(status.get("observedGeneration"))?;
    (observed < generation)
        .then(|| WorkloadHealth::progressing(format!("generation {generation} not yet observed")))
}

/// Follows `kubectl rollout status`: a rollout is done when every desired replica runs the new
/// template, no old replica remains, and every desired replica is available.
fn deployment(object: &Value, status: &Value) -> WorkloadHealth {
    // The deployment controller reports a stuck rollout this way once
    // `progressDeadlineSeconds` passes; it will not recover on its own.
    if let Some(progressing) = condition(status, "Progressing").filter(|c| {
        condition_status(c) == "False" && condition_reason(c) == Some("ProgressDeadlineExceeded")
    }) {
        return WorkloadHealth::degraded(condition_text(progressing, "ProgressDeadlineExceeded"));
    }
    // Pods cannot be created at all (quota, admission, ...).
    if let Some(failure) =
        condition(status, "ReplicaFailure").filter(|c| condition_status(c) == "True")
    {
        return WorkloadHealth::degraded(condition_text(failure, "ReplicaFailure"));
    }

    let replicas = spec_replicas(object);
    let updated = count(status, "updatedReplicas");
    let current = count(status, "replicas");
    let available = count(status, "availableReplicas");
    if updated < replicas {
        WorkloadHealth::progressing(format!("{updated}/{replicas} replicas updated"))
    } else if current > updated {
        WorkloadHealth::progressing(format!(
            "{} old replicas pending termination",
            current - updated
        ))
    } else if available < replicas {
        WorkloadHealth::progressing(format!("{available}/{replicas} replicas available"))
    } else {
        WorkloadHealth::available(format!("{replicas}/{replicas} replicas available"))
    }
}

/// Ready pods first, then revisions: a StatefulSet is done when every pod is ready and runs the
/// update revision.
fn stateful_set(object: &Value, status: &Value) -> WorkloadHealth {
    let replicas = spec_replicas(object);
    let ready = count(status, "readyReplicas");
    if ready < replicas {
        return WorkloadHealth::progressing(format!("{ready}/{replicas} replicas ready"));
    }

    // With OnDelete the controller never replaces pods itself, so revisions differing is the
    // steady state, not a rollout in progress.
    let on_delete = object
        .pointer("/spec/updateStrategy/type")
        .and_then(Value::as_str)
        == Some("OnDelete");
    // A partitioned rolling update deliberately leaves pods below the partition on the old
    // revision; it is done once every pod at or above the partition is updated.
    let partition = if on_delete {
        0
    } else {
        int(object.pointer("/spec/updateStrategy/rollingUpdate/partition"))
            .unwrap_or(0)
            .clamp(0, replicas.max(0))
    };
    if !on_delete && partition == 0 {
        if let Some(update) = status.get("updateRevision").and_then(Value::as_str) {
            if status.get("currentRevision").and_then(Value::as_str) != Some(update) {
                return WorkloadHealth::progressing("rolling update in progress");
            }
        }
    }
    if let Some(updated) = int(status.get("updatedReplicas")) {
        let target = replicas - partition;
        if updated < target {
            return WorkloadHealth::progressing(format!("{updated}/{target} replicas updated"));
        }
    }
    WorkloadHealth::available(format!("{ready}/{replicas} replicas ready"))
}

/// A DaemonSet is done when every node that should run it runs an updated, available pod.
/// Pods on nodes that should not run it (`numberMisscheduled`) are left for the controller to
/// remove and do not affect the workload's service.
fn daemon_set(object: &Value, status: &Value) -> WorkloadHealth {
    let desired = count(status, "desiredNumberScheduled");
    let updated = count(status, "updatedNumberScheduled");
    let available = count(status, "numberAvailable");
    // With OnDelete the controller never replaces pods itself, so old pods are the steady state.
    let on_delete = object
        .pointer("/spec/updateStrategy/type")
        .and_then(Value::as_str)
        == Some("OnDelete");
    if !on_delete && updated < desired {
        WorkloadHealth::progressing(format!("{updated}/{desired} pods updated"))
    } else if available < desired {
        WorkloadHealth::progressing(format!("{available}/{desired} pods available"))
    } else {
        WorkloadHealth::available(format!("{available}/{desired} pods available"))
    }
}

/// A Job is terminal once `Failed` or `Complete` is True; until then it is running.
fn job(status: &Value) -> WorkloadHealth {
    if let Some(failed) = condition(status, "Failed").filter(|c| condition_status(c) == "True") {
        return WorkloadHealth::degraded(condition_text(failed, "failed"));
    }
    if condition(status, "Complete").is_some_and(|c| condition_status(c) == "True") {
        return WorkloadHealth::available("complete");
    }
    WorkloadHealth::progressing(format!("{} active", count(status, "active")))
}

/// `spec.replicas`, defaulting to 1 as the apiserver does when it is unset.
fn spec_replicas(object: &Value) -> i64 {
    int(object.pointer("/spec/replicas")).unwrap_or(1)
}

/// A status counter; controllers omit zero counts, so missing (or garbage) means 0.
fn count(status: &Value, field: &str) -> i64 {
    int(status.get(field)).unwrap_or(0)
}

/// An integer, or `None` for anything else (strings, booleans, fractions, null).
fn int(value: Option<&Value>) -> Option<i64> {
    let value = value?;
    if let Some(n) = value.as_i64() {
        return Some(n);
    }
    // Beyond i64: absurd for a count, but saturating keeps comparisons meaningful.
    if value.as_u64().is_some() {
        return Some(i64::MAX);
    }
    // Integral floats (`3.0`) can appear when the object went through a float-only converter.
    let f = value.as_f64()?;
    (f.fract() == 0.0 && f >= i64::MIN as f64 && f <= i64::MAX as f64).then_some(f as i64)
}

/// The first condition of the given type in `status.conditions`.
fn condition<'a>(status: &'a Value, kind: &str) -> Option<&'a Value> {
    status
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
}

/// A condition's `status` ("True", "False", "Unknown"), or "" when missing.
fn condition_status(condition: &Value) -> &str {
    condition
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn condition_reason(condition: &Value) -> Option<&str> {
    condition
        .get("reason")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// `reason: message`, whichever of the two is present, or `fallback` when neither is.
fn condition_text(condition: &Value, fallback: &str) -> String {
    let message = condition
        .get("message")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    match (condition_reason(condition), message) {
        (Some(reason), Some(message)) => format!("{reason}: {message}"),
        (Some(text), None) | (None, Some(text)) => text.to_string(),
        (None, None) => fallback.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn health(object: Value) -> (HealthState, String) {
        let health = assess(&object).expect("kind has a health rule");
        (health.state, health.reason)
    }

    fn deployment(spec_replicas: i64, status: Value) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "generation": 2},
            "spec": {"replicas": spec_replicas},
            "status": status,
        })
    }

    #[test]
    fn states_serialize_and_label_by_name() {
        for state in HEALTH_STATES {
            assert_eq!(serde_json::to_value(state).unwrap(), json!(state.as_str()));
        }
        assert_eq!(
            HEALTH_STATES.map(|s| s.as_str()),
            ["Progressing", "Available", "Degraded"]
        );
        assert!(HealthState::Degraded > HealthState::Available);
        assert!(HealthState::Available > HealthState::Progressing);
        let health = WorkloadHealth::available("complete");
        assert_eq!(
            serde_json::to_value(&health).unwrap(),
            json!({"state": "Available", "reason": "complete"})
        );
    }

    #[test]
    fn deployment_rolling_is_progressing() {
        let object = deployment(
            3,
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 1, "availableReplicas": 3}),
        );
        assert_eq!(
            health(object),
            (HealthState::Progressing, "1/3 replicas updated".into())
        );
    }

    #[test]
    fn deployment_old_replicas_terminating_is_progressing() {
        let object = deployment(
            3,
            json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 3, "availableReplicas": 3}),
        );
        assert_eq!(
            health(object),
            (
                HealthState::Progressing,
                "1 old replicas pending termination".into()
            )
        );
    }

    #[test]
    fn deployment_waiting_for_availability_is_progressing() {
        let object = deployment(
            3,
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 2}),
        );
        assert_eq!(
            health(object),
            (HealthState::Progressing, "2/3 replicas available".into())
        );
    }

    #[test]
    fn deployment_fully_rolled_out_is_available() {
        let object = deployment(
            3,
            json!({
                "observedGeneration": 2, "replicas": 3, "updatedReplicas": 3,
                "availableReplicas": 3, "readyReplicas": 3,
                "conditions": [
                    {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                    {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
                ],
            }),
        );
        assert_eq!(
            health(object),
            (HealthState::Available, "3/3 replicas available".into())
        );
    }

    #[test]
    fn deployment_default_and_zero_replicas() {
        // No spec.replicas means 1.
        let mut object = deployment(0, json!({"updatedReplicas": 1, "replicas": 1}));
        object["spec"] = json!({});
        assert_eq!(
            health(object),
            (HealthState::Progressing, "0/1 replicas available".into())
        );
        // Scaled to zero with nothing left running.
        let object = deployment(0, json!({"observedGeneration": 2}));
        assert_eq!(
            health(object),
            (HealthState::Available, "0/0 replicas available".into())
        );
    }

    #[test]
    fn deployment_deadline_exceeded_is_degraded() {
        let object = deployment(
            3,
            json!({
                "observedGeneration": 2, "replicas": 3, "updatedReplicas": 1, "availableReplicas": 2,
                "conditions": [{
                    "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                    "message": "ReplicaSet \"web-5d8f\" has timed out progressing.",
                }],
            }),
        );
        assert_eq!(
            health(object),
            (
                HealthState::Degraded,
                "ProgressDeadlineExceeded: ReplicaSet \"web-5d8f\" has timed out progressing."
                    .into()
            )
        );
    }

    #[test]
    fn deployment_replica_failure_is_degraded() {
        let object = deployment(
            2,
            json!({
                "observedGeneration": 2,
                "conditions": [{
                    "type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                    "message": "pods \"web-x\" is forbidden: exceeded quota",
                }],
            }),
        );
        assert_eq!(
            health(object),
            (
                HealthState::Degraded,
                "FailedCreate: pods \"web-x\" is forbidden: exceeded quota".into()
            )
        );
        // Resolved failures (status False) do not count.
        let object = deployment(
            1,
            json!({
                "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1,
                "conditions": [{"type": "ReplicaFailure", "status": "False"}],
            }),
        );
        assert_eq!(health(object).0, HealthState::Available);
    }

    #[test]
    fn generation_not_observed_is_progressing() {
        // The old status says all is well, but it describes generation 1.
        let object = deployment(
            3,
            json!({"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}),
        );
        assert_eq!(
            health(object),
            (
                HealthState::Progressing,
                "generation 2 not yet observed".into()
            )
        );
        // Also for kinds ruled by their Ready condition.
        let object = json!({
            "apiVersion": "example.com/v1", "kind": "Database",
            "metadata": {"generation": 5},
            "status": {"observedGeneration": 4, "conditions": [{"type": "Ready", "status": "True"}]},
        });
        assert_eq!(
            health(object),
            (
                HealthState::Progressing,
                "generation 5 not yet observed".into()
            )
        );
    }

    #[test]
    fn apps_without_status_are_progressing() {
        for kind in ["Deployment", "StatefulSet", "DaemonSet"] {
            let object = json!({"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": "x"}});
            assert_eq!(
                health(object),
                (HealthState::Progressing, "no status yet".into()),
                "{kind}"
            );
            let object = json!({"apiVersion": "apps/v1", "kind": kind, "status": null});
            assert_eq!(health(object).1, "no status yet", "{kind}");
        }
    }

    fn stateful_set(update_strategy: Value, status: Value) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "db", "generation": 1},
            "spec": {"replicas": 3, "updateStrategy": update_strategy},
            "status": status,
        })
    }

    #[test]
    fn stateful_set_rules() {
        let rolling = json!({"type": "RollingUpdate"});
        let ready = stateful_set(
            rolling.clone(),
            json!({
                "observedGeneration": 1, "replicas": 3, "readyReplicas": 3, "updatedReplicas": 3,
                "currentRevision": "db-1", "updateRevision": "db-1",
            }),
        );
        assert_eq!(
            health(ready),
            (HealthState::Available, "3/3 replicas ready".into())
        );

        let not_ready = stateful_set(rolling.clone(), json!({"readyReplicas": 2}));
        assert_eq!(
            health(not_ready),
            (HealthState::Progressing, "2/3 replicas ready".into())
        );

        let rolling_update = stateful_set(
            rolling.clone(),
            json!({"readyReplicas": 3, "updatedReplicas": 1, "currentRevision": "db-1", "updateRevision": "db-2"}),
        );
        assert_eq!(
            health(rolling_update),
            (
                HealthState::Progressing,
                "rolling update in progress".into()
            )
        );

        // Revisions converge before the count does in some controller versions.
        let lagging_count = stateful_set(
            rolling,
            json!({"readyReplicas": 3, "updatedReplicas": 2, "currentRevision": "db-2", "updateRevision": "db-2"}),
        );
        assert_eq!(
            health(lagging_count),
            (HealthState::Progressing, "2/3 replicas updated".into())
        );

        // OnDelete: differing revisions are the steady state.
        let on_delete = stateful_set(
            json!({"type": "OnDelete"}),
            json!({"readyReplicas": 3, "currentRevision": "db-1", "updateRevision": "db-2"}),
        );
        assert_eq!(health(on_delete).0, HealthState::Available);

        // Partitioned: done once the pods at or above the partition are updated.
        let partitioned = json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 2}});
        let done = stateful_set(
            partitioned.clone(),
            json!({"readyReplicas": 3, "updatedReplicas": 1, "currentRevision": "db-1", "updateRevision": "db-2"}),
        );
        assert_eq!(health(done).0, HealthState::Available);
        let pending = stateful_set(
            partitioned,
            json!({"readyReplicas": 3, "updatedReplicas": 0, "currentRevision": "db-1", "updateRevision": "db-2"}),
        );
        assert_eq!(
            health(pending),
            (HealthState::Progressing, "0/1 replicas updated".into())
        );
    }

    fn daemon_set(status: Value) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "agent", "generation": 4},
            "spec": {},
            "status": status,
        })
    }

    #[test]
    fn daemon_set_rules() {
        let done = daemon_set(json!({
            "observedGeneration": 4, "desiredNumberScheduled": 5, "currentNumberScheduled": 5,
            "updatedNumberScheduled": 5, "numberAvailable": 5, "numberReady": 5,
            "numberMisscheduled": 1,
        }));
        assert_eq!(
            health(done),
            (HealthState::Available, "5/5 pods available".into())
        );

        let updating = daemon_set(json!({
            "desiredNumberScheduled": 5, "updatedNumberScheduled": 3, "numberAvailable": 5,
        }));
        assert_eq!(
            health(updating),
            (HealthState::Progressing, "3/5 pods updated".into())
        );

        let starting = daemon_set(json!({
            "desiredNumberScheduled": 5, "updatedNumberScheduled": 5, "numberAvailable": 4,
        }));
        assert_eq!(
            health(starting),
            (HealthState::Progressing, "4/5 pods available".into())
        );

        let mut on_delete = daemon_set(json!({
            "desiredNumberScheduled": 5, "updatedNumberScheduled": 0, "numberAvailable": 5,
        }));
        on_delete["spec"] = json!({"updateStrategy": {"type": "OnDelete"}});
        assert_eq!(health(on_delete).0, HealthState::Available);

        // Scheduled on no node at all: nothing to wait for.
        assert_eq!(health(daemon_set(json!({}))).0, HealthState::Available);
    }

    fn job(status: Option<Value>) -> Value {
        let mut object = json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "migrate", "generation": 1},
            "spec": {"backoffLimit": 2},
        });
        if let Some(status) = status {
            object["status"] = status;
        }
        object
    }

    #[test]
    fn job_rules() {
        let failed = job(Some(json!({
            "failed": 3,
            "conditions": [
                {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded"},
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                 "message": "Job has reached the specified backoff limit"},
            ],
        })));
        assert_eq!(
            health(failed),
            (
                HealthState::Degraded,
                "BackoffLimitExceeded: Job has reached the specified backoff limit".into()
            )
        );

        let complete = job(Some(json!({
            "succeeded": 1,
            "conditions": [
                {"type": "SuccessCriteriaMet", "status": "True"},
                {"type": "Complete", "status": "True"},
            ],
        })));
        assert_eq!(
            health(complete),
            (HealthState::Available, "complete".into())
        );

        let running = job(Some(
            json!({"active": 2, "startTime": "2024-01-01T00:00:00Z"}),
        ));
        assert_eq!(
            health(running),
            (HealthState::Progressing, "2 active".into())
        );

        assert_eq!(
            health(job(None)),
            (HealthState::Progressing, "0 active".into())
        );
    }

    fn custom(ready: Value) -> Value {
        json!({
            "apiVersion": "postgres.example.com/v1",
            "kind": "Cluster",
            "metadata": {"name": "pg", "generation": 3},
            "status": {"observedGeneration": 3, "conditions": [
                {"type": "Reconciling", "status": "False"},
                ready,
            ]},
        })
    }

    #[test]
    fn custom_resource_ready_condition() {
        let ready = custom(json!({"type": "Ready", "status": "True", "reason": "Healthy"}));
        assert_eq!(health(ready), (HealthState::Available, "Healthy".into()));

        let not_ready = custom(json!({
            "type": "Ready", "status": "False", "reason": "InstanceFailed",
            "message": "primary pod crash-looping",
        }));
        assert_eq!(
            health(not_ready),
            (
                HealthState::Degraded,
                "InstanceFailed: primary pod crash-looping".into()
            )
        );

        let unknown = custom(json!({"type": "Ready", "status": "Unknown"}));
        assert_eq!(
            health(unknown),
            (HealthState::Progressing, "readiness unknown".into())
        );

        // Core-group kinds use the same fallback (no slash in apiVersion).
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        });
        assert_eq!(health(pod), (HealthState::Available, "ready".into()));
    }

    #[test]
    fn kinds_without_rules_or_ready_are_none() {
        let config_map = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "cfg", "generation": 1},
            "data": {"a": "b"},
        });
        assert_eq!(assess(&config_map), None);

        let service = json!({
            "apiVersion": "v1", "kind": "Service",
            "status": {"loadBalancer": {}},
        });
        assert_eq!(assess(&service), None);

        let other_conditions = custom(json!({"type": "Synced", "status": "True"}));
        assert_eq!(assess(&other_conditions), None);

        // A Deployment outside the apps group is not the workload we know.
        let lookalike = json!({
            "apiVersion": "example.com/v1", "kind": "Deployment", "status": {},
        });
        assert_eq!(assess(&lookalike), None);
    }

    #[test]
    fn garbage_never_panics() {
        // Wrong types everywhere: counts as strings, conditions not a list, spec not an object.
        let object = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"generation": "two"},
            "spec": {"replicas": "3"},
            "status": {
                "observedGeneration": "one",
                "replicas": "3", "updatedReplicas": [1], "availableReplicas": {"n": 3},
                "conditions": "all good",
            },
        });
        // replicas "3" is not a number, so it defaults to 1; counts are 0.
        assert_eq!(
            health(object),
            (HealthState::Progressing, "0/1 replicas updated".into())
        );

        let object = json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet", "spec": 7,
            "status": {"readyReplicas": 1.5, "updateRevision": 3, "conditions": [null, 1, "x"]},
        });
        assert_eq!(
            health(object),
            (HealthState::Progressing, "0/1 replicas ready".into())
        );

        let object = json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "status": {"desiredNumberScheduled": 18446744073709551615u64, "numberAvailable": -1},
        });
        assert_eq!(health(object).0, HealthState::Progressing);

        let object = json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "status": {"active": true, "conditions": [{"type": "Failed", "status": true}]},
        });
        assert_eq!(
            health(object),
            (HealthState::Progressing, "0 active".into())
        );

        let object = json!({
            "apiVersion": "x/v1", "kind": "Thing",
            "status": {"conditions": [{"type": "Ready", "status": 1, "reason": 2}]},
        });
        assert_eq!(
            health(object),
            (HealthState::Progressing, "readiness unknown".into())
        );

        // Not even objects.
        for value in [
            json!(null),
            json!(42),
            json!("Deployment"),
            json!([]),
            json!({"kind": 5, "apiVersion": null}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "status": "ok"}),
        ] {
            let _ = assess(&value);
        }
        // Integral floats count; fractional ones do not.
        assert_eq!(int(Some(&json!(3.0))), Some(3));
        assert_eq!(int(Some(&json!(2.5))), None);
    }
}
