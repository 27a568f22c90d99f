//! The Git source over smart HTTP with a token: git's own `git http-backend` behind a local
//! server that checks HTTP Basic auth (`tests/e2e/git-http-server.py`).

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};

use flotilla::source::{GitCredentials, GitRef, GitSource};

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .output()
        .expect("git");
    assert!(output.status.success(), "git {args:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_token_authenticates_over_http_and_a_wrong_one_is_refused_without_showing_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    git(
        dir.path(),
        &["init", "-q", "--bare", "-b", "main", "fleet.git"],
    );
    git(&work, &["init", "-q", "-b", "main"]);
    std::fs::write(work.join("fleet.yaml"), "a: 1\n").expect("write");
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "one"]);
    let remote = dir.path().join("fleet.git");
    git(
        &work,
        &["push", "-q", remote.to_str().expect("utf-8"), "HEAD:main"],
    );
    let head = git(&work, &["rev-parse", "HEAD"]);

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/git-http-server.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .arg(dir.path())
        .arg("right-token")
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 git-http-server.py");
    let mut port = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut port)
        .expect("port");
    let _server = Server(child);
    let url = format!("http://127.0.0.1:{}/fleet.git", port.trim());

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
