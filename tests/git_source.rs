//! The Git source against real repositories on disk (`git` makes them, git2 reads them), and
//! over smart HTTP with a token: git's own `git http-backend` behind a local server that checks
//! HTTP Basic auth (`tests/e2e/git-http-server.py`).

#[path = "e2e/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::path::Path;

use flotilla::source::{GitCredentials, GitRef, GitSource};
use harness::git;

#[test]
fn a_token_authenticates_over_http_and_a_wrong_one_is_refused_without_showing_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (remote, work) = harness::git_remote_and_work(dir.path());
    std::fs::write(work.join("fleet.yaml"), "a: 1\n").expect("write");
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "one"]);
    git(
        &work,
        &["push", "-q", remote.to_str().expect("utf-8"), "HEAD:main"],
    );
    let head = git(&work, &["rev-parse", "HEAD"]);

    let server = harness::GitServer::start(dir.path(), "right-token");
    let url = format!("http://{}/remote.git", server.address);

    let source = |token: Option<&str>, cache: &str| GitSource {
        url: url.clone(),
        reference: GitRef::Branch("main".into()),
        cache_dir: dir.path().join(cache),
        credentials: GitCredentials {
            token: token.map(str::to_string),
            ssh_key: None,
        },
    };
    assert_eq!(
        source(Some("right-token"), "good")
            .fetch()
            .expect("fetch with the token"),
        head
    );
    let refused = source(Some("wrong-token"), "bad")
        .fetch()
        .expect_err("a wrong token is refused")
        .to_string();
    assert!(refused.contains(&url), "{refused}");
    assert!(!refused.contains("wrong-token"), "{refused}");
    let anonymous = source(None, "none")
        .fetch()
        .expect_err("no token")
        .to_string();
    assert!(anonymous.contains("no credentials"), "{anonymous}");
}

/// A bare remote and a work tree that pushes to it, with one commit on `main`.
fn remote_with_commit() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (remote, work) = harness::git_remote_and_work(dir.path());
    git(
        &work,
        &["remote", "add", "origin", remote.to_str().expect("utf-8")],
    );
    commit(&work, "app.yaml", "replicas: 1\n");
    (dir, remote, work)
}

fn commit(work: &Path, file: &str, content: &str) -> String {
    std::fs::write(work.join(file), content).expect("write");
    git(work, &["add", "."]);
    git(work, &["commit", "-q", "-m", file]);
    git(work, &["push", "-q", "-f", "origin", "HEAD:main"]);
    git(work, &["rev-parse", "HEAD"])
}

fn source(remote: &Path, cache: &Path, reference: GitRef) -> GitSource {
    GitSource {
        url: format!("file://{}", remote.display()),
        reference,
        cache_dir: cache.to_path_buf(),
        credentials: GitCredentials::default(),
    }
}

#[test]
fn a_branch_is_followed_through_new_commits_and_force_pushes() {
    let (dir, remote, work) = remote_with_commit();
    let first = git(&work, &["rev-parse", "HEAD"]);
    let source = source(
        &remote,
        &dir.path().join("cache"),
        GitRef::Branch("main".into()),
    );

    assert_eq!(source.fetch().expect("fetch"), first);
    assert_eq!(
        source.fetch().expect("fetch again"),
        first,
        "same commit, same hash"
    );
    let checkout = source.checkout(&first).expect("checkout");
    assert_eq!(
        std::fs::read_to_string(checkout.join("app.yaml")).expect("file"),
        "replicas: 1\n"
    );

    let second = commit(&work, "app.yaml", "replicas: 2\n");
    assert_eq!(source.fetch().expect("fetch"), second);
    let checkout = source.checkout(&second).expect("checkout");
    assert_eq!(
        std::fs::read_to_string(checkout.join("app.yaml")).expect("file"),
        "replicas: 2\n"
    );
    assert!(
        !dir.path().join("cache/commits").join(&first).exists(),
        "old checkout removed"
    );

    // A force-push back to the first commit is followed.
    git(&work, &["reset", "-q", "--hard", &first]);
    git(&work, &["push", "-q", "-f", "origin", "HEAD:main"]);
    assert_eq!(source.fetch().expect("fetch after force-push"), first);
}

#[test]
fn a_tag_and_an_exact_commit_can_be_followed() {
    let (dir, remote, work) = remote_with_commit();
    let tagged = git(&work, &["rev-parse", "HEAD"]);
    git(&work, &["tag", "v1"]);
    git(&work, &["push", "-q", "origin", "v1"]);
    let later = commit(&work, "other.yaml", "a: 1\n");

    let by_tag = source(&remote, &dir.path().join("tag"), GitRef::Tag("v1".into()));
    assert_eq!(by_tag.fetch().expect("fetch tag"), tagged);
    let by_commit = source(
        &remote,
        &dir.path().join("commit"),
        GitRef::Commit(tagged.clone()),
    );
    assert_eq!(by_commit.fetch().expect("fetch commit"), tagged);
    assert_ne!(tagged, later);
}

#[test]
fn an_unreachable_remote_is_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = source(
        &dir.path().join("missing.git"),
        &dir.path().join("cache"),
        GitRef::Branch("main".into()),
    );
    let error = source.fetch().expect_err("no remote").to_string();
    assert!(error.contains("missing.git"), "{error}");
    assert!(error.contains("fetching"), "{error}");
}

#[test]
fn credentials_never_show_in_debug_output() {
    let credentials = GitCredentials {
        token: Some("s3cr3t-token".into()),
        ssh_key: None,
    };
    let shown = format!("{credentials:?}");
    assert!(!shown.contains("s3cr3t"), "{shown}");
    assert!(shown.contains("redacted"), "{shown}");
}
