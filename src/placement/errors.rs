//! What goes wrong in a plan: a resource that fails alone ([`ResourceError`]), or fleet and
//! policy input that stops the whole plan ([`PlanError`]).

use serde::Serialize;

use crate::object::{ObjectRef, Origin};

/// A resource that failed for one cluster or for all; the rest of the plan stands.
#[derive(Debug, Clone, Serialize, thiserror::Error)]
#[error("{origin}: {resource}: {}{problem}", cluster.as_ref().map(|c| format!("cluster {c}: ")).unwrap_or_default())]
pub struct ResourceError {
    /// The resource.
    pub resource: ObjectRef,
    /// Its file and document.
    pub origin: Origin,
    /// The policy involved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The cluster, when only one is affected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// What went wrong: the problem and each of its causes, joined by `: `.
    pub problem: String,
    /// A fixed name for what went wrong, see [`ResourceError::kind`].
    #[serde(skip)]
    kind: &'static str,
}

impl ResourceError {
    /// `problem` of `resource` (at `origin`), under `policy`, for `cluster` or (`None`) for all.
    pub(super) fn new(
        resource: ObjectRef,
        origin: Origin,
        policy: Option<String>,
        cluster: Option<String>,
        problem: &dyn ResourceProblem,
    ) -> ResourceError {
        ResourceError {
            resource,
            origin,
            policy,
            cluster,
            problem: crate::error::chain(problem),
            kind: problem.kind(),
        }
    }

    /// A fixed, low-cardinality name for what went wrong, fit for a metric label:
    /// `invalid_name`, `invalid_data_key`, `invalid_replicas`, `invalid_requests`,
    /// `invalid_policy`, `no_feasible_cluster`, `no_capacity`, `not_enough_capacity`,
    /// `override_failed` or `override_changes_identity`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }
}

/// The typed error behind a [`ResourceError`]: it names itself for metrics.
pub(super) trait ResourceProblem: std::error::Error {
    /// One of the names [`ResourceError::kind`] lists.
    fn kind(&self) -> &'static str;
}

/// Fleet or policy input that makes the whole plan meaningless; nothing is planned.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A fleet or policy object has a bad or unknown field.
    #[error("{origin}: {kind} {name}: {field}: {problem}")]
    InvalidField {
        /// Where the object is.
        origin: Origin,
        /// Its kind.
        kind: String,
        /// Its name.
        name: String,
        /// Dotted path of the field (`spec.placement.clusterAffinity.foo`).
        field: String,
        /// What is wrong.
        problem: String,
    },
    /// Two declarations of one cluster.
    #[error("cluster {name}: declared twice, in {first} and in {second}")]
    DuplicateCluster {
        /// The cluster.
        name: String,
        /// First declaration.
        first: Origin,
        /// Second declaration.
        second: Origin,
    },
    /// The repo declares no member cluster.
    #[error(
        "no member clusters: the fleet repo has no Fleet (fleet.kurator.dev/v1alpha1) or AttachedCluster"
    )]
    NoClusters,
    /// The objects placed, counted once per cluster each goes to, went over the limit.
    #[error(
        "{origin}: {resource}: more than {limit} objects placed, counted once per cluster each goes to (raise the limit with --max-placed-objects)"
    )]
    TooManyPlaced {
        /// The limit.
        limit: usize,
        /// The resource whose placement went over it.
        resource: ObjectRef,
        /// Its file and document.
        origin: Origin,
    },
}

impl PlanError {
    /// A fixed, low-cardinality name for this error, fit for a metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            PlanError::InvalidField { .. } => "invalid_field",
            PlanError::DuplicateCluster { .. } => "duplicate_cluster",
            PlanError::NoClusters => "no_clusters",
            PlanError::TooManyPlaced { .. } => "limit",
        }
    }

    /// Always false: placement is pure, so the same fleet repo fails the same way again; only
    /// a new commit (or a raised limit) changes the outcome.
    pub fn is_retryable(&self) -> bool {
        false
    }
}
