//! Flotilla: a pull-based GitOps sync agent for fleets of Kubernetes clusters.
//!
//! A fleet repo describes the member clusters (Kurator `Fleet` / `AttachedCluster`), the
//! resource templates to run, and Karmada `PropagationPolicy` / `OverridePolicy` objects that
//! say where each template goes and how it differs per cluster. Flotilla turns one commit of
//! that repo into the exact set of objects each member cluster must hold.
//!
//! ```text
//! source (git2 / local dir + notify)  --commit-->  render (kustomize subset)  --objects-->
//! placement (policies x fleet)  --per-cluster desired set-->  apply (SSA, inventory, prune)
//!                                                    drift (watch member objects) --^
//! server (webhooks, /metrics, /healthz, /readyz, status)   metrics (prometheus registry)
//! ```
//!
//! Each stage has one input and one output type, and data flows one way:
//!
//! | module | takes | gives | I/O |
//! |---|---|---|---|
//! | [`render`] | a path of the repo on disk | [`render::Rendered`]: every declared object with its file and document | reads files below the repo root only |
//! | [`placement`] | [`render::Rendered`] | [`placement::Plan`]: per cluster, the objects it must hold, with replicas divided and overrides applied | none (pure) |
//! | [`apply`] | [`placement::Plan`] and a kubeconfig | [`apply::ClusterReport`] per cluster: applied, unchanged, pruned, failed | member apiservers |
//!
//! [`cli`] wires the stages to the `flotilla` command line; [`agent`] runs them on every new
//! commit. Kubernetes facts the stages share live in one table each: [`kinds`] (workload kinds
//! by group and kind, with their pod templates, and the apply order), [`image`] (image
//! references, by kustomize's and by Karmada's rules), [`labels`] (label selectors); what a
//! render or the HTTP server may cost is bounded by [`limits`].

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
