//! `flotilla run`: the long-running agent (reconcile loop plus HTTP server).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{ArgError, CliError, Outcome};
use crate::agent::{self, AgentConfig, Shared};
use crate::apply::SyncOptions;
use crate::cluster::health::HealthSettings;
use crate::cluster::hub::{Hub, HubSettings, MemberCredentials, SecretStore};
use crate::cluster::lease::LeaseSettings;
use crate::drift::DriftMode;
use crate::limits::{Limits, ServerLimits};
use crate::metrics::Metrics;
use crate::server::{self, WebhookSecrets};
use crate::source::{GitCredentials, GitRef, GitSource, Source};

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
    /// A kubeconfig with one context per member cluster, named as the cluster. Without it, the
    /// kubeconfigs come from the hub Secrets that the AttachedClusters name.
    #[arg(long, env = "FLOTILLA_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// The hub's kubeconfig (its current context). In a Pod, the service account is used.
    #[arg(long, env = "FLOTILLA_HUB_KUBECONFIG")]
    hub_kubeconfig: Option<PathBuf>,
    /// The Pod's service-account directory (token, ca.crt, namespace).
    #[arg(long, default_value = crate::cluster::hub::SERVICE_ACCOUNT_DIR, env = "FLOTILLA_SERVICE_ACCOUNT_DIR")]
    service_account_dir: PathBuf,
    /// The agent's namespace in the hub [default: the service account's, else flotilla-system].
    #[arg(long, env = "FLOTILLA_NAMESPACE")]
    namespace: Option<String>,
    /// This replica's name in the Leases [default: the host name and process id].
    #[arg(long, env = "FLOTILLA_IDENTITY")]
    identity: Option<String>,
    /// Shards the clusters are hashed into; replicas share them through Leases in the hub.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024), env = "FLOTILLA_SHARDS")]
    shards: u32,
    /// A dead replica's clusters are taken over within this (the Leases hold it less two retry
    /// periods of a fifteenth of it each).
    #[arg(long, default_value = "15s", value_parser = parse_duration, env = "FLOTILLA_LEASE_DURATION")]
    lease_duration: Duration,
    /// How often each member cluster's /readyz is probed.
    #[arg(long, default_value = "2s", value_parser = parse_duration, env = "FLOTILLA_HEALTH_INTERVAL")]
    health_interval: Duration,
    /// How long one probe may take.
    #[arg(long, default_value = "2s", value_parser = parse_duration, env = "FLOTILLA_HEALTH_TIMEOUT")]
    health_timeout: Duration,
    /// Failed probes in a row after which a cluster is NotReady and its Divided replicas fail over.
    #[arg(long, default_value_t = 3, env = "FLOTILLA_FAILURE_THRESHOLD")]
    failure_threshold: u32,
    /// Good probes in a row after which a NotReady cluster is Ready and gets its replicas back.
    #[arg(long, default_value_t = 5, env = "FLOTILLA_SUCCESS_THRESHOLD")]
    success_threshold: u32,
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
    #[arg(
        long,
        default_value_t = DriftMode::Correct,
        env = "FLOTILLA_DRIFT",
        value_parser = clap::builder::TypedValueParser::try_map(
            clap::builder::PossibleValuesParser::new(DriftMode::ALL.map(|mode| {
                clap::builder::PossibleValue::new(mode.name()).help(mode.help())
            })),
            |name| name.parse::<DriftMode>(),
        )
    )]
    drift: DriftMode,
    /// Limits of each commit's render.
    #[command(flatten)]
    limits: super::RenderLimitArgs,
    /// Limits of the HTTP server.
    #[command(flatten)]
    server_limits: ServerLimitArgs,
}

/// The flags of [`ServerLimits`]: what one client, or many, may cost the agent.
#[derive(Debug, Clone, Copy, clap::Args)]
#[command(next_help_heading = "HTTP server limits")]
pub struct ServerLimitArgs {
    /// Largest webhook body: a larger Content-Length is refused (413) before the body is
    /// read, a chunked body is cut off there.
    #[arg(long, value_name = "SIZE", default_value = "5MiB", value_parser = parse_body_size,
          env = "FLOTILLA_MAX_BODY")]
    max_body: usize,
    /// Webhook requests served at once; more are answered 503 before their body is read.
    #[arg(long, value_name = "N", default_value_t = ServerLimits::default().max_concurrent_requests,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=4096),
          env = "FLOTILLA_MAX_CONCURRENT_REQUESTS")]
    max_concurrent_requests: usize,
    /// A request's headers must arrive within this, also the next request's on a keep-alive
    /// connection: a half-sent request, or an idle connection, is closed after it.
    #[arg(long, default_value = "10s", value_parser = parse_duration, env = "FLOTILLA_HEADER_TIMEOUT")]
    header_timeout: Duration,
    /// A webhook request, body upload included, must be done within this (408 otherwise).
    #[arg(long, default_value = "20s", value_parser = parse_duration, env = "FLOTILLA_BODY_TIMEOUT")]
    body_timeout: Duration,
    /// A connection's whole life: it is closed after this long, however busy.
    #[arg(long, default_value = "60s", value_parser = parse_duration, env = "FLOTILLA_IDLE_TIMEOUT")]
    idle_timeout: Duration,
    /// Connections served at once; more are closed as they arrive.
    #[arg(long, value_name = "N", default_value_t = ServerLimits::default().max_connections,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=65_536),
          env = "FLOTILLA_MAX_CONNECTIONS")]
    max_connections: usize,
    /// Webhook deliveries remembered to ignore a duplicate (32 bytes each).
    #[arg(long, value_name = "N", default_value_t = ServerLimits::default().dedupe_entries,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000),
          env = "FLOTILLA_DEDUPE_ENTRIES")]
    dedupe_entries: usize,
}

impl From<ServerLimitArgs> for ServerLimits {
    fn from(args: ServerLimitArgs) -> Self {
        ServerLimits {
            max_body: args.max_body,
            max_concurrent_requests: args.max_concurrent_requests,
            header_timeout: args.header_timeout,
            body_timeout: args.body_timeout,
            idle_timeout: args.idle_timeout,
            max_connections: args.max_connections,
            dedupe_entries: args.dedupe_entries,
        }
    }
}

/// A webhook body size: at most 1 GiB (a body is held in memory whole).
fn parse_body_size(text: &str) -> Result<usize, ArgError> {
    let size = crate::limits::parse_size(text)?;
    if size > 1 << 30 {
        return Err(ArgError::invalid(text, "at most 1GiB"));
    }
    usize::try_from(size).map_err(|_| ArgError::invalid(text, "too large"))
}

impl RunArgs {
    /// The render and server limits the flags ask for.
    pub fn limits(&self) -> Limits {
        Limits {
            render: self.limits.into(),
            server: self.server_limits.into(),
        }
    }
}

/// Parses `500ms`, `30s`, `5m`, `1h`; more than zero (every duration of `run` is a period or
/// a timeout: zero would spin, or panic in a timer, and silently turn off health probes).
pub fn parse_duration(text: &str) -> Result<Duration, ArgError> {
    let text = text.trim();
    let (number, unit) = crate::limits::number_and_unit(text)
        .ok_or_else(|| ArgError::invalid(text, "expected a number and a unit, e.g. 30s or 1m"))?;
    let duration = match unit {
        "ms" => Some(Duration::from_millis(number)),
        "s" => Some(Duration::from_secs(number)),
        "m" => number.checked_mul(60).map(Duration::from_secs),
        "h" => number.checked_mul(3600).map(Duration::from_secs),
        _ => return Err(ArgError::invalid(text, "the unit must be ms, s, m or h")),
    }
    .ok_or_else(|| ArgError::invalid(text, "too long"))?;
    if duration.is_zero() {
        return Err(ArgError::invalid(text, "must be more than zero"));
    }
    Ok(duration)
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
    let shared = Arc::new(Shared::new(metrics));
    let runtime = super::runtime()?;
    let hub_settings = HubSettings {
        kubeconfig: args.hub_kubeconfig.clone(),
        service_account_dir: args.service_account_dir.clone(),
        namespace: args.namespace.clone(),
    };
    let in_pod = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    let hub = if args.hub_kubeconfig.is_some() || in_pod {
        let hub = runtime
            .block_on(Hub::connect(&hub_settings))
            .map_err(|error| CliError::Path {
                path: args
                    .hub_kubeconfig
                    .clone()
                    .unwrap_or_else(|| args.service_account_dir.clone()),
                problem: crate::error::chain(&error),
            })?;
        Some(hub)
    } else {
        None
    };
    let credentials = match (&args.kubeconfig, &hub) {
        (Some(path), _) => MemberCredentials::Kubeconfig(path.clone()),
        (None, Some(hub)) => {
            let _entered = runtime.enter();
            MemberCredentials::HubSecrets(SecretStore::spawn(hub))
        }
        (None, None) => {
            return Err(CliError::Path {
                path: PathBuf::from("--kubeconfig"),
                problem: "no member credentials: give --kubeconfig, or run in a hub (a Pod, or --hub-kubeconfig) where AttachedClusters name kubeconfig Secrets".into(),
            });
        }
    };
    let leases = hub.as_ref().map(|hub| {
        let _entered = runtime.enter();
        let group = if args.name == "flotilla" {
            "flotilla".to_string()
        } else {
            format!("flotilla-{}", args.name)
        };
        crate::cluster::lease::spawn(
            hub,
            LeaseSettings {
                group,
                identity: args.identity.clone().unwrap_or_else(default_identity),
                shards: args.shards,
                duration: args.lease_duration,
            },
        )
    });
    let limits = args.limits();
    let config = AgentConfig {
        source,
        repo_path: args.repo_path.clone(),
        credentials,
        hub,
        health: HealthSettings {
            interval: args.health_interval,
            timeout: args.health_timeout,
            failure_threshold: args.failure_threshold,
            success_threshold: args.success_threshold,
        },
        interval: args.interval,
        sync: SyncOptions {
            name: args.name.clone(),
            concurrency: args.concurrency,
            force: false,
        },
        drift: args.drift,
        limits: limits.render,
    };
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
        let agent = server::AgentLink {
            status: shared.status.subscribe(),
            trigger: shared.trigger.clone(),
            metrics: shared.metrics.clone(),
        };
        let app = server::router(agent, secrets, tracked_ref, &limits.server);
        // One signal stops both: the server, and the agent, which releases its Leases.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop_tx.send(true);
        });
        let stopped = |mut stop: tokio::sync::watch::Receiver<bool>| async move {
            let _ = stop.wait_for(|stop| *stop).await;
        };
        let server = server::serve(listener, app, stopped(stop_rx.clone()), &limits.server);
        tokio::join!(server, agent::run(config, shared, leases, stopped(stop_rx)));
        Ok(Outcome::Success)
    })
}

/// The host name and process id: unique on a laptop; in a Pod, set `FLOTILLA_IDENTITY` to the
/// Pod's name (deploy/ does).
fn default_identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|host| host.trim().to_string())
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| "flotilla".into());
    format!("{host}-{}", std::process::id())
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
        assert_eq!(
            parse_duration("500ms").ok(),
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_duration("30s").ok(), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("1m").ok(), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("2h").ok(), Some(Duration::from_secs(7200)));
        assert!(parse_duration("10").is_err());
        assert_eq!(
            parse_duration("0s").map_err(|error| error.to_string()),
            Err("\"0s\": must be more than zero".into())
        );
        assert!(parse_duration("0ms").is_err());
        assert!(parse_duration("1d").is_err());
        assert!(parse_duration("99999999999999999h").is_err());
    }
}
