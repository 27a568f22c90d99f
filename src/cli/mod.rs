//! The `flotilla` command line: each subcommand is a thin call into the library.
//!
//! Exit codes, as in ripgrep: 0 success, 1 a cluster or object failed, 2 bad input or usage.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};

mod plan;
mod render;
mod run;
mod status;
mod sync;

pub use plan::{PlanArgs, PlanFormat, plan_table};
pub use render::{RenderArgs, RenderFormat, to_yaml};
pub use status::{StatusArgs, StatusFormat};
pub use sync::{DiffArgs, ReportFormat, SyncArgs, diff_text, sync_table};

use crate::limits::{MAX_DEPTH_CEILING, RenderLimits, parse_size};
use crate::placement::capacity::CapacityError;
use crate::placement::{Capacity, Plan, PlanError};
use crate::render::RenderError;
use crate::sync::{CommitError, PlaceInputs, place_tree};

/// Flotilla: GitOps for fleets of Kubernetes clusters, with Karmada's placement semantics.
#[derive(Debug, Parser)]
#[command(name = "flotilla", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "FLOTILLA_LOG_FORMAT")]
    pub log_format: LogFormat,
}

/// Formats of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Lines for people.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Render what every member cluster must hold, with placement and overrides applied.
    Render(RenderArgs),
    /// Show where every resource goes: policy, clusters and replicas, with warnings.
    Plan(PlanArgs),
    /// Show, per cluster, what a sync would change (server-side dry-run; nothing is written).
    Diff(DiffArgs),
    /// Apply the plan to every member cluster with server-side apply, and prune.
    Sync(SyncArgs),
    /// Run the agent: follow a Git repo (poll and webhooks) and sync every new commit.
    Run(Box<run::RunArgs>),
    /// Ask a running agent (`flotilla run`) for its status: per cluster health, sync,
    /// workloads and failovers.
    Status(StatusArgs),
}

/// Arguments shared by commands that read a fleet path.
#[derive(Debug, clap::Args)]
pub struct Source {
    /// The fleet path: a directory (with or without kustomization.yaml) or a YAML file.
    pub path: PathBuf,
    /// The repository root that every file must stay inside [default: the enclosing Git
    /// work tree, else PATH].
    #[arg(long, env = "FLOTILLA_ROOT")]
    pub root: Option<PathBuf>,
    /// Limits of the render.
    #[command(flatten)]
    pub limits: RenderLimitArgs,
}

/// The flags of [`RenderLimits`], shared by every command that renders a fleet path.
#[derive(Debug, Clone, Copy, clap::Args)]
#[command(next_help_heading = "Limits")]
pub struct RenderLimitArgs {
    /// Objects one render may load (every file, generator and helm chart output; a base
    /// built by two overlays counts twice).
    #[arg(long, value_name = "N", default_value_t = RenderLimits::default().max_objects,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000_000),
          env = "FLOTILLA_MAX_OBJECTS")]
    pub max_objects: usize,
    /// Directories nested below the fleet path, and kustomizations nested through
    /// resources and components (at most 128).
    #[arg(long, value_name = "N", default_value_t = RenderLimits::default().max_depth,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_DEPTH_CEILING as u64),
          env = "FLOTILLA_MAX_DEPTH")]
    pub max_depth: usize,
    /// Largest file read (manifests, patches, generator files, values files), e.g. 8MiB.
    #[arg(long, value_name = "SIZE", default_value = "8MiB", value_parser = parse_size,
          env = "FLOTILLA_MAX_FILE_SIZE")]
    pub max_file_size: u64,
    /// Bytes one render may read from the repository, all files together.
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = parse_size,
          env = "FLOTILLA_MAX_RENDER_SIZE")]
    pub max_render_size: u64,
    /// Objects one plan may place, counted once per cluster each goes to (memory grows with
    /// objects times clusters).
    #[arg(long, value_name = "N", default_value_t = RenderLimits::default().max_placed_objects,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000_000),
          env = "FLOTILLA_MAX_PLACED_OBJECTS")]
    pub max_placed_objects: usize,
}

impl From<RenderLimitArgs> for RenderLimits {
    fn from(args: RenderLimitArgs) -> Self {
        RenderLimits {
            max_objects: args.max_objects,
            max_depth: args.max_depth,
            max_file_size: args.max_file_size,
            max_render_size: args.max_render_size,
            max_placed_objects: args.max_placed_objects,
        }
    }
}

/// How a command ended when it did not fail outright.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything worked.
    Success,
    /// Some resource failed for some cluster (exit code 1).
    Failed,
}

/// Why a command could not run (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The fleet path could not be rendered.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// The fleet or its policies are invalid.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The `--capacity` file is unusable.
    #[error(transparent)]
    Capacity(#[from] CapacityError),
    /// A path given on the command line is unusable.
    #[error("{}: {problem}", path.display())]
    Path {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// `--cluster` names no member cluster.
    #[error("--cluster {0}: not a member of the fleet")]
    UnknownCluster(String),
    /// Output could not be written.
    #[error("writing {}", path.display())]
    Write {
        /// Where.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Output could not be serialised.
    #[error("serialising output: {0}")]
    Serialise(String),
    /// The fleet repo could not be read (a render or placement error is one of the above).
    #[error(transparent)]
    Commit(CommitError),
    /// A running agent could not be asked, or its answer could not be read.
    #[error("{url}: {problem}")]
    Agent {
        /// The URL asked.
        url: String,
        /// What went wrong.
        problem: String,
    },
}

/// A command-line value that cannot be used; clap shows it with the flag's name.
#[derive(Debug, thiserror::Error)]
pub enum ArgError {
    /// The value is not one the flag takes.
    #[error("{text:?}: {problem}")]
    Invalid {
        /// The value as given.
        text: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A size that does not parse.
    #[error(transparent)]
    Size(#[from] crate::limits::SizeError),
}

impl ArgError {
    fn invalid(text: &str, problem: &'static str) -> Self {
        ArgError::Invalid {
            text: text.to_string(),
            problem,
        }
    }
}

impl From<CommitError> for CliError {
    fn from(error: CommitError) -> Self {
        match error {
            CommitError::Render { source, .. } => CliError::Render(source),
            CommitError::Place { source, .. } => CliError::Plan(source),
            other => CliError::Commit(other),
        }
    }
}

/// Runs a parsed command line, writing results to `stdout`.
pub fn run(cli: Cli, stdout: &mut dyn Write) -> Result<Outcome, CliError> {
    match cli.command {
        Command::Render(args) => render::render_command(args, stdout),
        Command::Plan(args) => plan::plan_command(args, stdout),
        Command::Diff(args) => sync::diff_command(args, stdout),
        Command::Sync(args) => sync::sync_command(args, stdout),
        Command::Run(args) => run::run_command(*args),
        Command::Status(args) => status::status_command(args, stdout),
    }
}

/// The runtime of the commands that talk to clusters.
fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| CliError::Path {
            path: PathBuf::from("(tokio runtime)"),
            problem: error.to_string(),
        })
}

/// Renders and plans a fleet path.
pub fn load_plan(source: &Source) -> Result<Plan, CliError> {
    load_plan_with(source, None)
}

/// [`load_plan`], with the clusters' capacity for capacity-based division.
pub fn load_plan_with(source: &Source, capacity: Option<&Capacity>) -> Result<Plan, CliError> {
    let (root, relative) = locate(&source.path, source.root.as_deref())?;
    let inputs = PlaceInputs {
        capacity: capacity.cloned(),
        // Offline there is no previous result: every capacity-based division is a first
        // schedule.
        previous: None,
        ..Default::default()
    };
    let commit = format!("dir:{}", root.display());
    Ok(place_tree(&root, &relative, source.limits.into(), commit, &inputs)?.plan)
}

/// Reads `--capacity FILE` when given.
fn load_capacity(path: Option<&Path>) -> Result<Option<Capacity>, CliError> {
    Ok(path.map(Capacity::load).transpose()?)
}

/// Finds the repository root and the path relative to it.
fn locate(path: &Path, root: Option<&Path>) -> Result<(PathBuf, PathBuf), CliError> {
    let absolute = path.canonicalize().map_err(|e| CliError::Path {
        path: path.to_path_buf(),
        problem: e.to_string(),
    })?;
    let root = match root {
        Some(root) => root.canonicalize().map_err(|e| CliError::Path {
            path: root.to_path_buf(),
            problem: e.to_string(),
        })?,
        None => absolute
            .ancestors()
            .find(|dir| dir.join(".git").exists())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| {
                if absolute.is_dir() {
                    absolute.clone()
                } else {
                    absolute.parent().map(Path::to_path_buf).unwrap_or_default()
                }
            }),
    };
    let relative = absolute
        .strip_prefix(&root)
        .map_err(|_| CliError::Path {
            path: path.to_path_buf(),
            problem: format!("not inside the repository root {}", root.display()),
        })?
        .to_path_buf();
    let relative = if relative.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        relative
    };
    Ok((root, relative))
}

fn outcome(plan: &Plan) -> Outcome {
    if plan.errors.is_empty() {
        Outcome::Success
    } else {
        Outcome::Failed
    }
}

fn write_error(path: &Path) -> impl FnOnce(std::io::Error) -> CliError + '_ {
    move |source| CliError::Write {
        path: path.to_path_buf(),
        source,
    }
}

// ----- render -----

fn aligned<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::ServerLimits;

    #[test]
    fn limit_flags_default_to_the_limits_defaults_and_parse_units() {
        let cli = Cli::try_parse_from(["flotilla", "plan", "fleet"]).unwrap();
        let Command::Plan(plan) = cli.command else {
            panic!("not plan")
        };
        assert_eq!(
            RenderLimits::from(plan.source.limits),
            RenderLimits::default()
        );
        let cli = Cli::try_parse_from(["flotilla", "run", "--path", "fleet"]).unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        assert_eq!(run.limits(), crate::limits::Limits::default());
        let cli = Cli::try_parse_from([
            "flotilla",
            "run",
            "--path",
            "fleet",
            "--max-file-size",
            "1MiB",
            "--max-body",
            "64KiB",
            "--max-concurrent-requests",
            "2",
            "--header-timeout",
            "2s",
            "--body-timeout",
            "5s",
            "--idle-timeout",
            "30s",
            "--max-connections",
            "10",
            "--dedupe-entries",
            "8",
            "--max-objects",
            "7",
            "--max-depth",
            "9",
        ])
        .unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        let crate::limits::Limits { render, server } = run.limits();
        assert_eq!(
            render,
            RenderLimits {
                max_objects: 7,
                max_depth: 9,
                max_file_size: 1 << 20,
                ..RenderLimits::default()
            }
        );
        use std::time::Duration;
        assert_eq!(
            server,
            ServerLimits {
                max_body: 64 << 10,
                max_concurrent_requests: 2,
                header_timeout: Duration::from_secs(2),
                body_timeout: Duration::from_secs(5),
                idle_timeout: Duration::from_secs(30),
                max_connections: 10,
                dedupe_entries: 8,
            }
        );
        for refused in [
            &["--max-body", "2GiB"][..],
            &["--max-concurrent-requests", "0"],
            &["--header-timeout", "0s"],
            &["--dedupe-entries", "0"],
            &["--max-depth", "129"],
        ] {
            let args = ["flotilla", "run", "--path", "fleet"]
                .into_iter()
                .chain(refused.iter().copied());
            assert!(Cli::try_parse_from(args).is_err(), "{refused:?}");
        }
    }
}
