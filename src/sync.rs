//! The story of one commit, shared by `flotilla run` and `flotilla sync --once`.
//!
//! [`sync_commit`] fetches (or reads) the fleet repo, renders the commit, places it, and hands
//! each cluster its desired set. What "hand" means is the caller's ([`Clusters`]): the agent
//! gives each cluster's set to that cluster's worker, which applies it and keeps it applied;
//! `sync --once` applies every cluster's set at once and reports. Either way the per-cluster
//! half is [`crate::apply::apply_cluster`].

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::Instrument;

use crate::limits::RenderLimits;
use crate::placement::capacity::Capacity;
use crate::placement::{self, Assignment, Divisions, Plan, PlanError};
use crate::render::{self, RenderError};
use crate::source::{Source, SourceError};

/// Syncs the current commit of `source`: the story of a commit, each step a call.
///
/// Returns `Ok(None)` when `clusters` has nothing to do for the commit (the agent, for a commit
/// it already handed out); an error means nothing was handed to any cluster, so whatever runs
/// stays as it is.
pub async fn sync_commit<C: Clusters>(
    source: &Source,
    fleet_path: &Path,
    limits: RenderLimits,
    clusters: &mut C,
) -> Result<Option<C::Handed>, CommitError> {
    // Fetch (Git) or read (a directory): which commit is current.
    let commit = fetch(source, clusters).await?;

    // Only a commit the clusters still need is rendered: a new one, or the same one placed
    // again (a cluster went NotReady, or the members' capacity changed).
    let Some(inputs) = clusters.inputs_for(&commit) else {
        return Ok(None);
    };

    let span = tracing::info_span!("commit", commit = %commit);
    async {
        // Check out, render and place, off the async threads: each cluster's desired set,
        // with replicas divided and overrides applied.
        let placed = place(source, fleet_path, limits, commit, inputs).await?;

        // Hand each cluster its desired set; the clusters apply it and record how it went.
        Ok(Some(clusters.hand(placed).await))
    }
    .instrument(span)
    .await
}

/// Where the planned clusters' desired sets go: the agent's workers, or `sync --once`.
pub trait Clusters {
    /// What handing a plan out gives back.
    type Handed;

    /// Sees every fetch, with how long it took (the agent's metrics).
    fn fetched(&mut self, _elapsed: Duration, _outcome: Result<&str, &SourceError>) {}

    /// What placement needs for `commit`, or `None` when the clusters need nothing for it.
    fn inputs_for(&mut self, commit: &str) -> Option<PlaceInputs>;

    /// Hands each planned cluster its desired set.
    fn hand(&mut self, placed: Placed) -> impl Future<Output = Self::Handed>;
}

/// What placement takes besides the commit.
#[derive(Debug, Clone, Default)]
pub struct PlaceInputs {
    /// NotReady clusters: Divided replicas fail over from them.
    pub unavailable: BTreeSet<String>,
    /// The members' capacity, used when a policy divides by it; without it, such resources
    /// fail.
    pub capacity: Option<Capacity>,
    /// The last plan's divisions and how to divide from them; `None` offline, where every
    /// capacity-based division is a first schedule.
    pub previous: Option<(Divisions, Assignment)>,
}

/// A placed commit.
#[derive(Debug)]
pub struct Placed {
    /// The commit (`dir:<path>` for a directory).
    pub commit: String,
    /// Each cluster's desired set, and what could not be placed.
    pub plan: Plan,
    /// Whether a policy divides replicas by the members' capacity.
    pub divides_by_capacity: bool,
}

/// Why a commit was not handed to its clusters; nothing of it was applied.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The repository could not be fetched.
    #[error("fetch: {0}")]
    Fetch(#[source] SourceError),
    /// The commit could not be checked out.
    #[error("commit {commit}: checkout: {source}; nothing applied")]
    Checkout {
        /// The commit.
        commit: String,
        /// Why.
        #[source]
        source: SourceError,
    },
    /// The commit does not render.
    #[error("commit {commit}: render: {source}; nothing applied")]
    Render {
        /// The commit.
        commit: String,
        /// Why.
        #[source]
        source: RenderError,
    },
    /// The commit's fleet or policies cannot be placed.
    #[error("commit {commit}: place: {source}; nothing applied")]
    Place {
        /// The commit.
        commit: String,
        /// Why.
        #[source]
        source: PlanError,
    },
    /// The render's thread ended without an answer (it panicked).
    #[error("commit {commit}: render: the render stopped: {problem}; nothing applied")]
    Stopped {
        /// The commit.
        commit: String,
        /// What the runtime said.
        problem: String,
    },
}

impl CommitError {
    /// Whether trying the same commit again can help: a fetch or checkout can (the network,
    /// a full disk), a render or placement cannot (the same files give the same answer) unless
    /// a file could not be read for a passing reason.
    pub fn is_retryable(&self) -> bool {
        match self {
            CommitError::Fetch(source) | CommitError::Checkout { source, .. } => {
                source.is_retryable()
            }
            CommitError::Render { source, .. } => source.is_retryable(),
            CommitError::Place { .. } => false,
            CommitError::Stopped { .. } => true,
        }
    }

    /// The stage that failed, a fixed metric label: `fetch`, `checkout`, `render` or `place`.
    pub fn kind(&self) -> &'static str {
        match self {
            CommitError::Fetch(_) => "fetch",
            CommitError::Checkout { .. } => "checkout",
            CommitError::Render { .. } | CommitError::Stopped { .. } => "render",
            CommitError::Place { .. } => "place",
        }
    }
}

/// The current commit, fetched off the async threads.
async fn fetch<C: Clusters>(source: &Source, clusters: &mut C) -> Result<String, CommitError> {
    let started = Instant::now();
    let fetching = source.clone();
    let fetched = tokio::task::spawn_blocking(move || fetching.current_commit())
        .await
        .unwrap_or_else(|stopped| {
            Err(SourceError::Cache {
                path: PathBuf::from("(fetch)"),
                problem: format!("the fetch stopped: {stopped}"),
            })
        });
    clusters.fetched(started.elapsed(), fetched.as_deref());
    fetched.map_err(CommitError::Fetch)
}

/// Checks out, renders and places `commit` on a blocking thread.
async fn place(
    source: &Source,
    fleet_path: &Path,
    limits: RenderLimits,
    commit: String,
    inputs: PlaceInputs,
) -> Result<Placed, CommitError> {
    let (source, fleet_path) = (source.clone(), fleet_path.to_path_buf());
    let placing = commit.clone();
    tokio::task::spawn_blocking(move || match source.checkout(&placing) {
        Ok(tree) => place_tree(&tree, &fleet_path, limits, placing, &inputs),
        Err(source) => Err(CommitError::Checkout {
            commit: placing,
            source,
        }),
    })
    .await
    .unwrap_or_else(|stopped| {
        Err(CommitError::Stopped {
            commit,
            problem: stopped.to_string(),
        })
    })
}

/// Renders the fleet path of a checked-out tree and places it: what `flotilla render` and
/// `plan` show, and what [`sync_commit`] hands out. Reads files below `tree` only.
pub fn place_tree(
    tree: &Path,
    fleet_path: &Path,
    limits: RenderLimits,
    commit: String,
    inputs: &PlaceInputs,
) -> Result<Placed, CommitError> {
    let rendered = match render::render_tree_with(tree, fleet_path, limits) {
        Ok(rendered) => rendered,
        Err(source) => return Err(CommitError::Render { commit, source }),
    };
    let divides_by_capacity = placement::needs_capacity(&rendered);
    let previous = inputs
        .previous
        .as_ref()
        .map(|(divisions, assignment)| placement::Previous {
            divisions,
            assignment: *assignment,
        });
    let plan_inputs = placement::PlanInputs {
        unavailable: &inputs.unavailable,
        capacity: inputs.capacity.as_ref(),
        previous,
        max_placed_objects: limits.max_placed_objects,
    };
    match placement::plan_with(&rendered, &plan_inputs) {
        Ok(plan) => Ok(Placed {
            commit,
            plan,
            divides_by_capacity,
        }),
        Err(source) => Err(CommitError::Place { commit, source }),
    }
}
