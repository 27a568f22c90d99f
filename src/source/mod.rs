//! Source: the fleet repo at one commit, from Git or from a directory.
//!
//! [`Source::current_commit`] says which commit is current (a Git fetch, or a fixed name for a
//! directory, which has none) and [`Source::checkout`] gives the directory that holds its
//! tree, for render to read. Both block on I/O: callers on async threads use
//! `spawn_blocking`.

mod directory;
mod git;

use std::path::PathBuf;

pub use directory::watch_directory;
pub use git::{GitCredentials, GitRef, GitSource, redacted};

/// Where the fleet repo comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A Git repository.
    Git(GitSource),
    /// A directory on disk (development): re-synced on every trigger.
    Directory(PathBuf),
}

impl Source {
    /// The current commit: fetched from Git, or, for a directory (which has no commits),
    /// `dir:<path>`, the same every time, so that every trigger syncs it again.
    pub fn current_commit(&self) -> Result<String, SourceError> {
        match self {
            Source::Git(git) => git.fetch(),
            Source::Directory(dir) => Ok(format!("dir:{}", dir.display())),
        }
    }

    /// The directory holding `commit`'s tree.
    pub fn checkout(&self, commit: &str) -> Result<PathBuf, SourceError> {
        match self {
            Source::Git(git) => git.checkout(commit),
            Source::Directory(dir) => Ok(dir.clone()),
        }
    }

    /// Whether every trigger syncs the source again, the same commit or not: a directory has
    /// no commits to tell a change by.
    pub fn resyncs_every_trigger(&self) -> bool {
        matches!(self, Source::Directory(_))
    }
}

/// Fetching or reading the repository failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A Git operation failed (unreachable remote, bad credentials, missing ref...).
    #[error("git {url}: {action}: {message}")]
    Git {
        /// The remote.
        url: String,
        /// What was being done.
        action: String,
        /// libgit2's message.
        message: String,
        /// libgit2's error class: whether a retry can help.
        class: git2::ErrorClass,
    },
    /// The cache directory is unusable.
    #[error("{}: {problem}", path.display())]
    Cache {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

impl SourceError {
    /// Whether trying again can help: a network or remote failure can pass, a commit or ref
    /// that does not exist, or credentials the remote refuses, stay so until someone acts.
    pub fn is_retryable(&self) -> bool {
        match self {
            SourceError::Git { class, .. } => !matches!(
                class,
                git2::ErrorClass::Reference | git2::ErrorClass::Object | git2::ErrorClass::Invalid
            ),
            SourceError::Cache { .. } => true,
        }
    }

    /// A fixed name for this error, fit for a metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceError::Git { .. } => "git",
            SourceError::Cache { .. } => "cache",
        }
    }
}
