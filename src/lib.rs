//! Flotilla: a pull-based GitOps sync agent for fleets of Kubernetes clusters.
//!
//! A fleet repo describes the member clusters (Kurator `Fleet` / `AttachedCluster`), the
//! resource templates to run, and Karmada `PropagationPolicy` / `OverridePolicy` objects that
//! say where each template goes and how it differs per cluster. Flotilla turns one commit of
//! that repo into the exact set of objects each member cluster must hold.
//!
//! [`sync::sync_commit`] tells the story of one commit, for `flotilla run` and
//! `flotilla sync --once` alike: fetch or read it ([`source`]), render it ([`render`]), place it
//! ([`placement`]), and hand each cluster its desired set, which
//! [`apply::apply_cluster`] applies. Data flows one way:
//!
//! ```text
//! source --commit--> render --objects--> placement --per-cluster desired set--> apply
//!                                                                   ^
//!     agent: the loop, one worker per cluster, the status store  ---+--- cluster: hub,
//!     (drift and failover feed back by asking for another sync)          leases, health,
//!                                                                        capacity, watches
//! server: webhooks, /metrics, /healthz, /readyz, /status          cli: the `flotilla` command
//! ```
//!
//! | module | takes | gives | I/O |
//! |---|---|---|---|
//! | [`source`] | a Git remote or a directory | a commit, checked out into a directory | Git |
//! | [`render`] | a path of that directory | [`render::Rendered`]: every declared object with its file and document | reads files below the repo root only |
//! | [`placement`] | [`render::Rendered`] | [`placement::Plan`]: per cluster, the objects it must hold, with replicas divided and overrides applied | none (pure) |
//! | [`apply`] | one cluster's desired set and its client | [`apply::ClusterReport`]: applied, unchanged, pruned, failed | member apiservers |
//!
//! Around the stages: [`agent`] runs them on every new commit (its loop, one worker per
//! cluster, and [`agent::store`], the one writer of [`status`], the `/status` schema that
//! `flotilla status` reads too); [`cluster`] is the rest of what the agent says to clusters
//! (hub credentials, Leases, health probes, capacity, watches); [`drift`] says what counts as
//! drift; [`server`] serves webhooks and the agent's state through an [`server::AgentLink`];
//! [`metrics`] is the Prometheus registry; [`cli`] wires it all to the command line.
//!
//! Kubernetes facts the stages share live in one table each: [`kinds`] (workload kinds by
//! group and kind, with their pod templates, and the apply order), [`image`] (image
//! references, by kustomize's and by Karmada's rules), [`labels`] (label selectors),
//! [`object`] (scopes and namespace defaulting); what a render or the HTTP server may cost is
//! bounded by [`limits`]. The errors a sync acts on ([`sync::CommitError`],
//! [`apply::ClusterError`], [`apply::ObjectError`] and what they wrap) say whether a retry can
//! help (`is_retryable`: a refused object waits for the next commit, a timeout backs off) and
//! name themselves for metrics (`kind`); [`error::chain`] prints an error with its causes.

// Errors carry the file, document, field and object they concern (that is their point); they
// are built only on failure, so their size never costs a successful run.
#![allow(clippy::result_large_err)]

pub mod agent;
pub mod apply;
pub mod cli;
pub mod cluster;
pub mod drift;
pub mod error;
pub mod image;
pub mod kinds;
pub mod labels;
pub mod limits;
pub mod metrics;
pub mod object;
pub mod placement;
pub mod render;
pub mod server;
pub mod source;
pub mod status;
pub mod sync;
pub mod workload;

/// Thin wrappers over private entry points, for the cargo-fuzz targets in `fuzz/` only: not a
/// stable API.
#[doc(hidden)]
pub mod fuzzing {
    use serde_json::Value;

    /// Kustomize's strategic merge of `patch` into `target` (built-in kinds).
    pub fn strategic_merge(
        target: &mut Value,
        patch: &Value,
    ) -> Result<(), crate::render::MergeError> {
        crate::render::merge::strategic_merge(target, patch)
    }

    /// Kustomize's merge of `patch` into `target` for kinds without a schema (custom resources).
    pub fn schemaless_merge(target: &mut Value, patch: &Value) {
        crate::render::merge::schemaless_merge(target, patch)
    }

    /// Why an RFC 6902 patch did not apply.
    #[derive(Debug, thiserror::Error)]
    pub enum JsonPatchError {
        /// `operations` is not a list of operations.
        #[error("invalid JSON patch")]
        Invalid(#[source] serde_json::Error),
        /// An operation failed.
        #[error(transparent)]
        Failed(#[from] json_patch::PatchError),
    }

    /// An RFC 6902 patch as kustomize's `patches` read it: `operations` a list of operations.
    pub fn json_patch(target: &mut Value, operations: Value) -> Result<(), JsonPatchError> {
        let patch: json_patch::Patch =
            serde_json::from_value(operations).map_err(JsonPatchError::Invalid)?;
        Ok(json_patch::patch(target, &patch.0)?)
    }
}
