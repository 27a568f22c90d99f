//! `flotilla run`: the long-running agent (reconcile loop plus HTTP server).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{CliError, Outcome};
use crate::agent::{self, AgentConfig, Shared, Source};
use crate::apply::SyncOptions;
use crate::drift::DriftMode;
use crate::metrics::Metrics;
use crate::server::{self, WebhookSecrets};
use crate::source::{GitCredentials, GitRef, GitSource};

/// `flotilla run`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["repo", "path"])))]
pub struct RunArgs {
    /// The fleet repo's Git URL (https://, ssh://, git@host:path or file://).
    #[arg(long, env = "FLOTILLA_REPO")]
    repo: Option<String>,
    /// The branch to follow [default: main].
    #[arg(long = "ref", env = "FLOTILLA_REF", conflicts_with_all = ["tag", "commit"])]
    branch: Option<String>,
    /// A tag to follow instead of a branch.
    #[arg(long, env = "FLOTILLA_TAG", conflicts_with = "commit")]
    tag: Option<String>,
    /// One exact commit to apply instead of a branch.
    #[arg(long, env = "FLOTILLA_COMMIT")]
    commit: Option<String>,
    /// The fleet path inside the repo.
    #[arg(long, default_value = ".", env = "FLOTILLA_REPO_PATH")]
    repo_path: PathBuf,
    /// A local directory instead of a Git repo (development).
    #[arg(long, env = "FLOTILLA_PATH", conflicts_with = "repo")]
    path: Option<PathBuf>,
    /// A kubeconfig with one context per member cluster, named as the cluster.
    #[arg(long, env = "FLOTILLA_KUBECONFIG")]
    kubeconfig: PathBuf,
    /// How often to poll the source without a webhook (e.g. 30s, 1m, 1h).
    #[arg(long, default_value = "1m", value_parser = parse_duration, env = "FLOTILLA_INTERVAL")]
    interval: Duration,
    /// Where the HTTP server listens.
    #[arg(long, default_value = "0.0.0.0:8080", env = "FLOTILLA_LISTEN")]
    listen: SocketAddr,
    /// File holding the GitHub webhook secret (enables POST /hooks/github).
    #[arg(long, env = "FLOTILLA_GITHUB_SECRET_FILE")]
    github_secret_file: Option<PathBuf>,
    /// File holding the GitLab webhook token (enables POST /hooks/gitlab).
    #[arg(long, env = "FLOTILLA_GITLAB_TOKEN_FILE")]
    gitlab_token_file: Option<PathBuf>,
    /// File holding the generic webhook token (enables POST /hooks/generic).
    #[arg(long, env = "FLOTILLA_GENERIC_TOKEN_FILE")]
    generic_token_file: Option<PathBuf>,
    /// File holding a token for HTTPS Git remotes.
    #[arg(
        long,
        env = "FLOTILLA_GIT_TOKEN_FILE",
        conflicts_with = "git_ssh_key_file"
    )]
    git_token_file: Option<PathBuf>,
    /// Private key file for SSH Git remotes.
    #[arg(long, env = "FLOTILLA_GIT_SSH_KEY_FILE")]
    git_ssh_key_file: Option<PathBuf>,
    /// Where the Git clone and checkouts are kept.
    #[arg(
        long,
        default_value = "/tmp/flotilla-cache",
        env = "FLOTILLA_CACHE_DIR"
    )]
    cache_dir: PathBuf,
    /// The sync's name (names the inventory in each cluster).
    #[arg(long, default_value = "flotilla", env = "FLOTILLA_NAME", value_parser = super::sync::parse_sync_name)]
    name: String,
    /// Requests in flight per cluster.
    #[arg(long, default_value_t = 16, env = "FLOTILLA_CONCURRENCY")]
    concurrency: usize,
    /// What to do when a managed object is changed or deleted in a member cluster (an object
    /// annotated `flotilla.dev/drift: report` is only reported).
    #[arg(long, value_enum, default_value_t = DriftMode::Correct, env = "FLOTILLA_DRIFT")]
    drift: DriftMode,
}

/// Parses `500ms`, `30s`, `5m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a number and a unit, e.g. 30s or 1m"))?;
    let seconds = match unit {
        "ms" => return Ok(Duration::from_millis(number)),
        "s" => Some(number),
        "m" => number.checked_mul(60),
        "h" => number.checked_mul(3600),
        _ => return Err(format!("{text:?}: the unit must be ms, s, m or h")),
    };
    seconds
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?}: too long"))
}

fn read_secret(path: &Option<PathBuf>) -> Result<Option<Vec<u8>>, CliError> {
    let Some(path) = path else { return Ok(None) };
    let text = std::fs::read_to_string(path).map_err(|error| CliError::Path {
        path: path.clone(),
        problem: error.to_string(),
    })?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(CliError::Path {
            path: path.clone(),
            problem: "empty secret".into(),
        });
    }
    Ok(Some(secret.as_bytes().to_vec()))
}

/// Runs the agent until it is stopped (SIGINT/SIGTERM).
pub fn run_command(args: RunArgs) -> Result<Outcome, CliError> {
    let (source, tracked_ref) = match (&args.repo, &args.path) {
        (Some(url), _) => {
            let reference = match (&args.branch, &args.tag, &args.commit) {
                (_, Some(tag), _) => GitRef::Tag(tag.clone()),
                (_, _, Some(commit)) => GitRef::Commit(commit.clone()),
                (branch, _, _) => GitRef::Branch(branch.clone().unwrap_or_else(|| "main".into())),
            };
            let token = read_secret(&args.git_token_file)?
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
            let tracked_ref = reference.ref_name();
            let source = Source::Git(GitSource {
                url: url.clone(),
                reference,
                cache_dir: args.cache_dir.clone(),
                credentials: GitCredentials {
                    token,
                    ssh_key: args.git_ssh_key_file.clone(),
                },
            });
            (source, tracked_ref)
        }
        (None, Some(path)) => (Source::Directory(path.clone()), None),
        (None, None) => unreachable!("clap requires --repo or --path"),
    };
    let secrets = WebhookSecrets {
        github: read_secret(&args.github_secret_file)?,
        gitlab: read_secret(&args.gitlab_token_file)?,
        generic: read_secret(&args.generic_token_file)?,
    };
    // A remote that accepts the connection and then says nothing must not hang the loop.
    // SAFETY: libgit2's global options are set once, before any Git operation runs.
    unsafe {
        let _ = git2::opts::set_server_connect_timeout_in_milliseconds(10_000);
        let _ = git2::opts::set_server_timeout_in_milliseconds(60_000);
    }
    let metrics = Metrics::new().map_err(|error| CliError::Serialise(error.to_string()))?;
    let shared = Arc::new(Shared {
        status: Default::default(),
        trigger: Default::default(),
        metrics,
    });
    let config = AgentConfig {
        source,
        repo_path: args.repo_path.clone(),
        kubeconfig: args.kubeconfig.clone(),
        interval: args.interval,
        sync: SyncOptions {
            name: args.name.clone(),
            concurrency: args.concurrency,
            force: false,
        },
        drift: args.drift,
    };
    let runtime = super::runtime()?;
    // A local directory re-syncs when it changes (debounced), besides polls and webhooks.
    let _watcher = match &config.source {
        Source::Directory(dir) => {
            let shared = shared.clone();
            Some(
                crate::source::watch_directory(dir, Duration::from_millis(300), move || {
                    shared.trigger.notify_one();
                })
                .map_err(|error| CliError::Path {
                    path: dir.clone(),
                    problem: error.to_string(),
                })?,
            )
        }
        Source::Git(_) => None,
    };
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|error| CliError::Path {
                path: PathBuf::from(args.listen.to_string()),
                problem: format!("listening: {error}"),
            })?;
        tracing::info!(listen = %args.listen, "serving /metrics, /healthz, /readyz, /status and webhooks");
        let app = server::router(shared.clone(), secrets, tracked_ref);
        let server = axum::serve(listener, app).with_graceful_shutdown(shutdown_signal());
        tokio::select! {
            result = server => result.map_err(|error| CliError::Path {
                path: PathBuf::from(args.listen.to_string()),
                problem: error.to_string(),
            })?,
            () = agent::run(config, shared) => {}
        }
        Ok(Outcome::Success)
    })
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => return interrupt.await.unwrap_or_default(),
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    interrupt.await.unwrap_or_default();
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_take_a_unit_and_refuse_overflow() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("1d").is_err());
        assert!(parse_duration("99999999999999999h").is_err());
    }
}
