//! The story of one commit, shared by `flotilla run` and `flotilla sync --once`.
//!
//! [`sync_commit`] fetches (or reads) the fleet repo, renders the commit, places it, and hands
//! each cluster its desired set. What "hand" means is the caller's ([`Clusters`]): the agent
//! gives each cluster's set to that cluster's worker, which applies it and keeps it applied;
//! `sync --once` applies every cluster's set at once and reports. Either way the per-cluster
//! half is [`crate::apply::apply_cluster`].

use std::collections::BTreeSet;
use std::path::Path;
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
    /// The fetch's or the render's thread ended without an answer (it panicked).
    #[error("{stage}: the {stage} stopped: {problem}; nothing applied")]
    Stopped {
        /// `fetch`, or `render` (with the commit's checkout and placement).
        stage: &'static str,
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
            CommitError::Render { .. } => "render",
            CommitError::Place { .. } => "place",
            CommitError::Stopped { stage, .. } => stage,
        }
    }
}

/// The current commit, fetched off the async threads.
async fn fetch<C: Clusters>(source: &Source, clusters: &mut C) -> Result<String, CommitError> {
    let started = Instant::now();
    let fetching = source.clone();
    let fetched = tokio::task::spawn_blocking(move || fetching.current_commit())
        .await
        .map_err(|stopped| CommitError::Stopped {
            stage: "fetch",
            problem: stopped.to_string(),
        })?;
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
    tokio::task::spawn_blocking(move || match source.checkout(&commit) {
        Ok(tree) => place_tree(&tree, &fleet_path, limits, commit, &inputs),
        Err(source) => Err(CommitError::Checkout { commit, source }),
    })
    .await
    .unwrap_or_else(|stopped| {
        Err(CommitError::Stopped {
            stage: "render",
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The caller's side of a commit, recording what it was asked and given.
    #[derive(Default)]
    struct Recorder {
        /// Whether `inputs_for` asks for the commit.
        wants: bool,
        fetches: Vec<Result<String, String>>,
        asked: Vec<String>,
        handed: Vec<(String, Vec<String>)>,
    }

    impl Clusters for Recorder {
        type Handed = usize;

        fn fetched(&mut self, _elapsed: Duration, outcome: Result<&str, &SourceError>) {
            self.fetches
                .push(outcome.map(str::to_string).map_err(|e| e.to_string()));
        }

        fn inputs_for(&mut self, commit: &str) -> Option<PlaceInputs> {
            self.asked.push(commit.to_string());
            self.wants.then(PlaceInputs::default)
        }

        async fn hand(&mut self, placed: Placed) -> usize {
            let clusters: Vec<String> = placed.plan.desired.keys().cloned().collect();
            self.handed.push((placed.commit, clusters));
            self.handed.len()
        }
    }

    fn example_fleet() -> Source {
        Source::Directory(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/fleet-repo"))
    }

    /// A directory holding `files`, removed when dropped.
    fn scratch(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    #[tokio::test]
    async fn a_commit_is_fetched_rendered_placed_and_handed_to_every_planned_cluster() {
        let source = example_fleet();
        let mut clusters = Recorder {
            wants: true,
            ..Default::default()
        };
        // Its `fleet` directory: the apps need helm, which unit tests do not assume.
        let handed = sync_commit(
            &source,
            Path::new("fleet"),
            RenderLimits::default(),
            &mut clusters,
        )
        .await
        .expect("the example fleet syncs");
        assert_eq!(handed, Some(1));
        let commit = format!(
            "dir:{}",
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("examples/fleet-repo")
                .display()
        );
        assert_eq!(clusters.fetches, vec![Ok(commit.clone())]);
        assert_eq!(clusters.asked, vec![commit.clone()]);
        let (handed_commit, planned) = &clusters.handed[0];
        assert_eq!(handed_commit, &commit);
        assert!(
            planned.len() >= 2,
            "the example fleet has several clusters: {planned:?}"
        );
    }

    #[tokio::test]
    async fn a_commit_the_clusters_do_not_need_is_neither_rendered_nor_handed_out() {
        // It would not render: asking for it would be an error.
        let broken = scratch(&[("kustomization.yaml", "resources: [\n")]);
        let source = Source::Directory(broken.path().to_path_buf());
        let mut clusters = Recorder::default();
        let handed = sync_commit(
            &source,
            Path::new("."),
            RenderLimits::default(),
            &mut clusters,
        )
        .await
        .expect("nothing was rendered");
        assert_eq!(handed, None);
        assert_eq!(clusters.asked.len(), 1);
        assert!(clusters.handed.is_empty());
    }

    /// Syncs the fleet `files`, which must fail; the error, and whether anything was handed.
    async fn failing_fleet(files: &[(&str, &str)]) -> (CommitError, bool) {
        let fleet = scratch(files);
        let mut clusters = Recorder {
            wants: true,
            ..Default::default()
        };
        let source = Source::Directory(fleet.path().to_path_buf());
        let limits = RenderLimits::default();
        let error = sync_commit(&source, Path::new("."), limits, &mut clusters)
            .await
            .expect_err("the fleet is broken");
        (error, !clusters.handed.is_empty())
    }

    #[tokio::test]
    async fn a_commit_that_does_not_render_is_handed_to_nobody_and_is_final() {
        let (error, handed) = failing_fleet(&[("kustomization.yaml", "resources: [\n")]).await;
        assert!(matches!(error, CommitError::Render { .. }), "{error:?}");
        assert_eq!(error.kind(), "render");
        assert!(!error.is_retryable(), "the same files fail the same way");
        let text = error.to_string();
        assert!(
            text.contains("kustomization.yaml") && text.ends_with("nothing applied"),
            "{text}"
        );
        assert!(!handed);
    }

    #[tokio::test]
    async fn a_fleet_that_does_not_place_is_handed_to_nobody_and_is_final() {
        let config_map = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\n";
        let (error, handed) = failing_fleet(&[("app.yaml", config_map)]).await;
        assert!(matches!(error, CommitError::Place { .. }), "{error:?}");
        assert_eq!(error.kind(), "place");
        assert!(!error.is_retryable(), "placement is pure");
        assert!(!handed);
    }

    #[tokio::test]
    async fn a_remote_that_cannot_be_fetched_is_retried() {
        let missing = scratch(&[]);
        let source = Source::Git(crate::source::GitSource {
            url: format!("file://{}/no-such-repo.git", missing.path().display()),
            reference: crate::source::GitRef::Branch("main".into()),
            cache_dir: missing.path().join("cache"),
            credentials: Default::default(),
        });
        let mut clusters = Recorder {
            wants: true,
            ..Default::default()
        };
        let error = sync_commit(
            &source,
            Path::new("."),
            RenderLimits::default(),
            &mut clusters,
        )
        .await
        .expect_err("there is no remote");
        assert!(matches!(error, CommitError::Fetch(_)), "{error:?}");
        assert_eq!(error.kind(), "fetch");
        assert!(error.is_retryable(), "a remote can come back: {error}");
        assert!(error.to_string().starts_with("fetch: "), "{error}");
        assert_eq!(clusters.fetches.len(), 1);
        assert!(clusters.fetches[0].is_err());
        assert!(
            clusters.asked.is_empty(),
            "nothing to ask for without a commit"
        );
    }
}
