//! The fleet repo from Git (git2), checked out into a cache directory.
//!
//! The repository is kept bare in `<cache>/repo.git` and fetched on each poll; the tree of the
//! resolved commit is checked out into `<cache>/commits/<hash>`, which render reads. A commit
//! that was checked out once is not checked out again, and only the newest is kept.

use std::path::{Path, PathBuf};

use super::SourceError;
use git2::{
    AutotagOption, Cred, CredentialType, FetchOptions, Oid, RemoteCallbacks, Repository,
    build::CheckoutBuilder,
};

/// What to follow in the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitRef {
    /// The tip of a branch.
    Branch(String),
    /// A tag.
    Tag(String),
    /// One exact commit.
    Commit(String),
}

impl GitRef {
    /// The full ref name a push event names for this reference (`refs/heads/main`); none for
    /// an exact commit, which no push moves.
    pub fn ref_name(&self) -> Option<String> {
        match self {
            GitRef::Branch(branch) => Some(format!("refs/heads/{branch}")),
            GitRef::Tag(tag) => Some(format!("refs/tags/{tag}")),
            GitRef::Commit(_) => None,
        }
    }
}

/// Credentials for the remote. Their values are never logged or exported.
#[derive(Clone, Default)]
pub struct GitCredentials {
    /// A token for HTTPS (sent as the password).
    pub token: Option<String>,
    /// A private key file for SSH.
    pub ssh_key: Option<PathBuf>,
}

impl std::fmt::Debug for GitCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitCredentials")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ssh_key", &self.ssh_key)
            .finish()
    }
}

/// A Git repository to follow.
#[derive(Debug, Clone)]
pub struct GitSource {
    /// The remote URL (`https://`, `ssh://`, `git@host:path` or `file://`).
    pub url: String,
    /// What to follow.
    pub reference: GitRef,
    /// Where the bare clone and checkouts live.
    pub cache_dir: PathBuf,
    /// How to authenticate.
    pub credentials: GitCredentials,
}

impl GitSource {
    fn git_error(&self, action: &str) -> impl FnOnce(git2::Error) -> SourceError + '_ {
        let action = action.to_string();
        move |error| SourceError::Git {
            url: redacted(&self.url),
            action,
            message: error.message().to_string(),
            class: error.class(),
        }
    }

    fn open_or_init(&self) -> Result<Repository, SourceError> {
        let path = self.cache_dir.join("repo.git");
        std::fs::create_dir_all(&self.cache_dir).map_err(|error| SourceError::Cache {
            path: self.cache_dir.clone(),
            problem: error.to_string(),
        })?;
        match Repository::open_bare(&path) {
            Ok(repository) => Ok(repository),
            Err(_) => Repository::init_bare(&path).map_err(self.git_error("creating the cache")),
        }
    }

    /// Fetches the remote and returns the commit the reference points at now. Force-pushes
    /// are followed (the fetch refspec is forced).
    pub fn fetch(&self) -> Result<String, SourceError> {
        let repository = self.open_or_init()?;
        let mut remote = repository
            .remote_anonymous(&self.url)
            .map_err(self.git_error("opening the remote"))?;
        let refspecs: Vec<String> = match &self.reference {
            GitRef::Branch(branch) => {
                vec![format!("+refs/heads/{branch}:refs/remotes/origin/{branch}")]
            }
            GitRef::Tag(tag) => vec![format!("+refs/tags/{tag}:refs/tags/{tag}")],
            GitRef::Commit(_) => vec!["+refs/heads/*:refs/remotes/origin/*".to_string()],
        };
        let mut options = FetchOptions::new();
        options
            .remote_callbacks(self.callbacks())
            .download_tags(AutotagOption::None);
        remote
            .fetch(&refspecs, Some(&mut options), None)
            .map_err(self.git_error("fetching"))?;
        let local_ref = match &self.reference {
            GitRef::Branch(branch) => format!("refs/remotes/origin/{branch}"),
            GitRef::Tag(tag) => format!("refs/tags/{tag}"),
            GitRef::Commit(hash) => {
                let oid = Oid::from_str(hash).map_err(self.git_error("reading --commit"))?;
                let commit = repository
                    .find_commit(oid)
                    .map_err(self.git_error("finding the commit"))?;
                return Ok(commit.id().to_string());
            }
        };
        let commit = repository
            .find_reference(&local_ref)
            .and_then(|reference| reference.peel_to_commit())
            .map_err(self.git_error(&format!("resolving {local_ref}")))?;
        Ok(commit.id().to_string())
    }

    fn callbacks(&self) -> RemoteCallbacks<'_> {
        let mut callbacks = RemoteCallbacks::new();
        let mut attempts = 0;
        callbacks.credentials(move |_url, username, allowed| {
            // libgit2 asks again after a refusal; one try per kind is enough.
            attempts += 1;
            if attempts > 2 {
                return Err(git2::Error::from_str("the remote refused the credentials"));
            }
            if allowed.contains(CredentialType::USERNAME) {
                return Cred::username(username.unwrap_or("git"));
            }
            if allowed.contains(CredentialType::SSH_KEY)
                && let Some(key) = &self.credentials.ssh_key
            {
                return Cred::ssh_key(username.unwrap_or("git"), None, key, None);
            }
            if allowed.contains(CredentialType::USER_PASS_PLAINTEXT)
                && let Some(token) = &self.credentials.token
            {
                return Cred::userpass_plaintext(username.unwrap_or("flotilla"), token);
            }
            Err(git2::Error::from_str(
                "no credentials configured for this remote",
            ))
        });
        callbacks
    }

    /// Checks out the tree of `commit` into `<cache>/commits/<commit>` (once) and removes older
    /// checkouts. Returns the directory.
    pub fn checkout(&self, commit: &str) -> Result<PathBuf, SourceError> {
        let commits = self.cache_dir.join("commits");
        let target = commits.join(commit);
        if !target.exists() {
            let repository = self.open_or_init()?;
            let oid = Oid::from_str(commit).map_err(self.git_error("reading the commit id"))?;
            let tree = repository
                .find_commit(oid)
                .and_then(|commit| commit.tree())
                .map_err(self.git_error("reading the commit's tree"))?;
            let partial = commits.join(format!("{commit}.partial"));
            remove_dir(&partial)?;
            create_dir(&partial)?;
            let mut checkout = CheckoutBuilder::new();
            checkout.target_dir(&partial).force();
            repository
                .checkout_tree(tree.as_object(), Some(&mut checkout))
                .map_err(self.git_error("checking out"))?;
            std::fs::rename(&partial, &target).map_err(|error| SourceError::Cache {
                path: target.clone(),
                problem: error.to_string(),
            })?;
        }
        for entry in std::fs::read_dir(&commits)
            .map_err(|error| SourceError::Cache {
                path: commits.clone(),
                problem: error.to_string(),
            })?
            .flatten()
        {
            if entry.file_name() != commit {
                remove_dir(&entry.path())?;
            }
        }
        Ok(target)
    }
}

/// The URL without userinfo: `https://user:token@host/x` must not reach logs or `/status`.
pub fn redacted(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            match authority.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://***@{host}/{path}"),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}

fn create_dir(path: &Path) -> Result<(), SourceError> {
    std::fs::create_dir_all(path).map_err(|error| SourceError::Cache {
        path: path.to_path_buf(),
        problem: error.to_string(),
    })
}

fn remove_dir(path: &Path) -> Result<(), SourceError> {
    match std::fs::remove_dir_all(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(SourceError::Cache {
            path: path.to_path_buf(),
            problem: error.to_string(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn userinfo_is_redacted_from_urls() {
        assert_eq!(
            redacted("https://bot:ghp_secret@github.com/acme/fleet.git"),
            "https://***@github.com/acme/fleet.git"
        );
        assert_eq!(
            redacted("https://github.com/acme/fleet.git"),
            "https://github.com/acme/fleet.git"
        );
        assert_eq!(
            redacted("git@github.com:acme/fleet.git"),
            "git@github.com:acme/fleet.git"
        );
    }
}
