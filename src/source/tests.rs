//! The Git source against real repositories on disk (`git` makes them, git2 reads them).

use std::path::Path;
use std::process::Command;

use super::*;

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .output()
        .expect("git runs");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// A bare remote and a work tree that pushes to it, with one commit on `main`.
fn remote_with_commit() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let remote = dir.path().join("remote.git");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    git(
        dir.path(),
        &["init", "-q", "--bare", "-b", "main", "remote.git"],
    );
    git(&work, &["init", "-q", "-b", "main"]);
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
