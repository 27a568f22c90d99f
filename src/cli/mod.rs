//! The `flotilla` command line: each subcommand is a thin call into the library.
//!
//! Exit codes, as in ripgrep: 0 success, 1 a cluster or object failed, 2 bad input or usage.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::Value;

mod run;
mod status;
mod sync;

pub use status::{StatusArgs, StatusFormat};
pub use sync::{DiffArgs, ReportFormat, SyncArgs, diff_text, sync_table};

use crate::limits::{MAX_DEPTH_CEILING, RenderLimits, parse_size};
use crate::object::Object;
use crate::placement::capacity::CapacityError;
use crate::placement::{self, Capacity, Plan, PlanError};
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

/// `flotilla render`.
#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    #[command(flatten)]
    source: Source,
    /// Only this cluster.
    #[arg(long, env = "FLOTILLA_CLUSTER")]
    cluster: Option<String>,
    /// Write one directory per cluster here (one file per object) instead of printing.
    #[arg(long, env = "FLOTILLA_OUT")]
    out: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = RenderFormat::Yaml, env = "FLOTILLA_OUTPUT")]
    output: RenderFormat,
    /// Each cluster's allocatable and requested resources (YAML), for `Aggregated` and
    /// `dynamicWeight` replica division.
    #[arg(long, value_name = "FILE", env = "FLOTILLA_CAPACITY")]
    capacity: Option<PathBuf>,
}

/// `flotilla plan`.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    #[command(flatten)]
    source: Source,
    /// Output format.
    #[arg(long, value_enum, default_value_t = PlanFormat::Table, env = "FLOTILLA_OUTPUT")]
    output: PlanFormat,
    /// Compare with the plan of another fleet path (e.g. a checkout of the previous commit)
    /// and show the replicas that move per cluster.
    #[arg(long, value_name = "OTHER_PATH")]
    diff: Option<PathBuf>,
    /// Each cluster's allocatable and requested resources (YAML), for `Aggregated` and
    /// `dynamicWeight` replica division.
    #[arg(long, value_name = "FILE", env = "FLOTILLA_CAPACITY")]
    capacity: Option<PathBuf>,
}

/// Formats of `render`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RenderFormat {
    /// YAML documents.
    Yaml,
    /// One JSON object: cluster name -> objects.
    Json,
}

/// Formats of `plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    /// A table for people.
    Table,
    /// JSON for programs.
    Json,
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
        Command::Render(args) => render_command(args, stdout),
        Command::Plan(args) => plan_command(args, stdout),
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

fn render_command(args: RenderArgs, stdout: &mut dyn Write) -> Result<Outcome, CliError> {
    let capacity = load_capacity(args.capacity.as_deref())?;
    let plan = load_plan_with(&args.source, capacity.as_ref())?;
    let clusters: BTreeMap<&String, &Vec<Object>> = match &args.cluster {
        Some(name) => {
            let objects = plan
                .desired
                .get_key_value(name)
                .ok_or_else(|| CliError::UnknownCluster(name.clone()))?;
            BTreeMap::from([objects])
        }
        None => plan.desired.iter().collect(),
    };
    let stdout_path = PathBuf::from("(stdout)");
    match (&args.out, args.output) {
        (Some(out), format) => write_tree(out, &clusters, format)?,
        (None, RenderFormat::Json) => {
            let json: BTreeMap<&String, Vec<&Value>> = clusters
                .iter()
                .map(|(name, objects)| (*name, objects.iter().map(|o| &o.value).collect()))
                .collect();
            let text = serde_json::to_string_pretty(&json)
                .map_err(|e| CliError::Serialise(e.to_string()))?;
            writeln!(stdout, "{text}").map_err(write_error(&stdout_path))?;
        }
        (None, RenderFormat::Yaml) => {
            let mut first = true;
            for (cluster, objects) in &clusters {
                for object in objects.iter() {
                    if !first {
                        writeln!(stdout, "---").map_err(write_error(&stdout_path))?;
                    }
                    first = false;
                    write!(stdout, "# cluster: {cluster}\n{}", to_yaml(&object.value)?)
                        .map_err(write_error(&stdout_path))?;
                }
            }
        }
    }
    for error in &plan.errors {
        eprintln!("error: {error}");
    }
    Ok(outcome(&plan))
}

/// Serialises one object as a YAML document.
pub fn to_yaml(value: &Value) -> Result<String, CliError> {
    serde_saphyr::to_string(value).map_err(|e| CliError::Serialise(e.to_string()))
}

/// Checks that `value` can be one path part below `--out`: not empty (except a namespace),
/// not `.` or `..`, no separators or NUL, at most 253 bytes (Kubernetes' longest name).
fn path_part(what: &str, value: &str, object: Option<&Object>) -> Result<(), CliError> {
    let problem = if value.is_empty() {
        (what != "namespace").then_some("is empty")
    } else if value == "." || value == ".." {
        Some("is `.` or `..`")
    } else if value.contains(['/', '\\', '\0']) {
        Some("contains a path separator or NUL")
    } else if value.len() > 253 {
        Some("is longer than 253 bytes")
    } else {
        None
    };
    match (problem, object) {
        (None, _) => Ok(()),
        (Some(problem), Some(object)) => Err(CliError::Path {
            path: object.origin.path.clone(),
            problem: format!(
                "{}: {what} {value:?} {problem}; nothing was written",
                object.object_ref()
            ),
        }),
        (Some(problem), None) => Err(CliError::Path {
            path: PathBuf::from(value),
            problem: format!("{what} {problem}; nothing was written"),
        }),
    }
}

/// The longest file name Linux (and most file systems) accept, in bytes.
const MAX_FILE_NAME: usize = 255;

/// `<kind>-<name>.<extension>`. A valid name (up to 253 bytes) with its kind can be longer
/// than a file name may be: such a name keeps as much of its start as fits, then a hash of the
/// whole, so it stays stable and distinct instead of failing the write halfway.
fn file_name(kind: &str, name: &str, extension: &str) -> String {
    let stem = format!("{kind}-{name}");
    if stem.len() + 1 + extension.len() <= MAX_FILE_NAME {
        return format!("{stem}.{extension}");
    }
    use sha2::{Digest, Sha256};
    let digest = crate::apply::inventory::hex(&Sha256::digest(stem.as_bytes()));
    let digest = &digest[..16];
    let room = MAX_FILE_NAME - (1 + digest.len() + 1 + extension.len());
    let mut end = room.min(stem.len());
    while !stem.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}-{digest}.{extension}", &stem[..end])
}

/// Marks a directory as written by `flotilla render --out`, so a re-render may replace it.
const OUT_MARKER: &str = ".flotilla-render";

/// Writes `<out>/<cluster>/<namespace or _cluster>/<kind>[.<group>]-<name>.<ext>`: stable names,
/// one object per file. A previous render in `out` is replaced; any other content is refused.
fn write_tree(
    out: &Path,
    clusters: &BTreeMap<&String, &Vec<Object>>,
    format: RenderFormat,
) -> Result<(), CliError> {
    // Names become path parts: every one is checked before anything is written, so a hostile
    // name (`..`, `/etc/x`) can neither write outside `out` nor leave a half-written tree.
    for (cluster, objects) in clusters {
        path_part("cluster name", cluster, None)?;
        for object in objects.iter() {
            path_part("namespace", object.namespace(), Some(object))?;
            path_part("metadata.name", object.name(), Some(object))?;
            path_part("kind", object.kind(), Some(object))?;
        }
    }
    if out.exists() {
        let has_content = std::fs::read_dir(out)
            .map_err(write_error(out))?
            .next()
            .is_some();
        if has_content && !out.join(OUT_MARKER).exists() {
            return Err(CliError::Path {
                path: out.to_path_buf(),
                problem:
                    "exists and was not written by `flotilla render --out`; refusing to overwrite"
                        .into(),
            });
        }
        std::fs::remove_dir_all(out).map_err(write_error(out))?;
    }
    std::fs::create_dir_all(out).map_err(write_error(out))?;
    std::fs::write(out.join(OUT_MARKER), "written by flotilla render\n")
        .map_err(write_error(out))?;
    for (cluster, objects) in clusters {
        for object in objects.iter() {
            let namespace = match object.namespace() {
                "" => "_cluster",
                ns => ns,
            };
            let kind = match object.group() {
                "" => object.kind().to_lowercase(),
                group => format!("{}.{group}", object.kind().to_lowercase()),
            };
            let (extension, text) = match format {
                RenderFormat::Yaml => ("yaml", to_yaml(&object.value)?),
                RenderFormat::Json => (
                    "json",
                    serde_json::to_string_pretty(&object.value)
                        .map_err(|e| CliError::Serialise(e.to_string()))?
                        + "\n",
                ),
            };
            let dir = out.join(cluster.as_str()).join(namespace);
            std::fs::create_dir_all(&dir).map_err(write_error(&dir))?;
            let file = dir.join(file_name(&kind, object.name(), extension));
            std::fs::write(&file, text).map_err(write_error(&file))?;
        }
    }
    Ok(())
}

// ----- plan -----

fn plan_command(args: PlanArgs, stdout: &mut dyn Write) -> Result<Outcome, CliError> {
    let capacity = load_capacity(args.capacity.as_deref())?;
    let plan = load_plan_with(&args.source, capacity.as_ref())?;
    let stdout_path = PathBuf::from("(stdout)");
    let text = match (&args.diff, args.output) {
        (Some(other), format) => {
            let before = load_plan_with(
                &Source {
                    path: other.clone(),
                    root: None,
                    limits: args.source.limits,
                },
                capacity.as_ref(),
            )?;
            let changes = placement::diff(&before, &plan);
            match format {
                PlanFormat::Json => serde_json::to_string_pretty(&changes)
                    .map_err(|e| CliError::Serialise(e.to_string()))?,
                PlanFormat::Table => diff_table(&changes),
            }
        }
        (None, PlanFormat::Json) => {
            serde_json::to_string_pretty(&plan).map_err(|e| CliError::Serialise(e.to_string()))?
        }
        (None, PlanFormat::Table) => plan_table(&plan),
    };
    writeln!(stdout, "{}", text.trim_end()).map_err(write_error(&stdout_path))?;
    Ok(outcome(&plan))
}

/// The plan as aligned text: resources, clusters, then warnings and errors.
pub fn plan_table(plan: &Plan) -> String {
    let mut rows = vec![[
        "RESOURCE".to_string(),
        "POLICY".to_string(),
        "CLUSTER -> REPLICAS".to_string(),
    ]];
    for resource in &plan.resources {
        let targets: Vec<String> = resource
            .targets
            .iter()
            .map(|t| match t.replicas {
                Some(r) => format!("{}={r}", t.cluster),
                None => t.cluster.clone(),
            })
            .collect();
        rows.push([
            resource.resource.to_string(),
            match (&resource.policy, &resource.affinity_group) {
                (Some(policy), Some(group)) => format!("{policy} (affinity {group})"),
                (Some(policy), None) => policy.clone(),
                (None, _) => "-".into(),
            },
            if targets.is_empty() {
                "(none)".into()
            } else {
                targets.join(" ")
            },
        ]);
    }
    let mut out = aligned(&rows);
    out.push('\n');
    let mut cluster_rows = vec![[
        "CLUSTER".to_string(),
        "OBJECTS".to_string(),
        "PROVIDER/REGION".to_string(),
    ]];
    for cluster in &plan.clusters {
        let count = plan.desired.get(&cluster.name).map_or(0, Vec::len);
        cluster_rows.push([
            cluster.name.clone(),
            count.to_string(),
            format!(
                "{}/{}",
                cluster.provider.as_deref().unwrap_or("-"),
                cluster.region.as_deref().unwrap_or("-")
            ),
        ]);
    }
    out.push_str(&aligned(&cluster_rows));
    for warning in &plan.warnings {
        out.push_str(&format!("\nwarning: {}", warning.message));
    }
    for error in &plan.errors {
        out.push_str(&format!("\nerror: {error}"));
    }
    out
}

fn diff_table(changes: &[placement::ReplicaChange]) -> String {
    if changes.is_empty() {
        return "no placement changes".into();
    }
    let mut rows = vec![[
        "RESOURCE".to_string(),
        "CLUSTER".to_string(),
        "REPLICAS".to_string(),
    ]];
    for change in changes {
        let show = |r: Option<Option<u64>>| match r {
            None => "absent".to_string(),
            Some(None) => "present".to_string(),
            Some(Some(n)) => n.to_string(),
        };
        rows.push([
            change.resource.to_string(),
            change.cluster.clone(),
            format!("{} -> {}", show(change.before), show(change.after)),
        ]);
    }
    aligned(&rows)
}

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
