//! `flotilla sync --once` and `flotilla diff`: the plan against real member clusters.

use std::io::Write;
use std::path::PathBuf;

use clap::ValueEnum;

use super::{ArgError, CliError, Outcome, Source, aligned, load_plan, locate, write_error};
use crate::apply::diff::{Change, ClusterDiff, diff_cluster};
use crate::apply::{
    ApplyError, ClusterReport, ClusterStatus, Member, SyncOptions, apply_fleet,
    kept_by_plan_errors, member::connect_all,
};
use crate::placement::Plan;
use crate::source::Source as Repo;
use crate::sync::{Clusters, PlaceInputs, Placed, sync_commit};

/// Which clusters and how to reach them; shared by `sync` and `diff`.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// A kubeconfig with one context per member cluster, named as the cluster.
    #[arg(long, env = "FLOTILLA_KUBECONFIG")]
    kubeconfig: PathBuf,
    /// Only these clusters (repeat the flag for several) [default: every member].
    #[arg(long = "cluster", env = "FLOTILLA_CLUSTER", value_delimiter = ',')]
    clusters: Vec<String>,
    /// The sync's name: it names the inventory kept in each cluster
    /// (ConfigMap flotilla-system/inventory-NAME). Syncs with different names never prune
    /// each other's objects.
    #[arg(long, default_value = "flotilla", env = "FLOTILLA_NAME", value_parser = parse_sync_name)]
    name: String,
    /// Requests in flight per cluster.
    #[arg(long, default_value_t = 16, env = "FLOTILLA_CONCURRENCY")]
    concurrency: usize,
}

/// A sync's name goes into a ConfigMap name and a label value: a DNS label (RFC 1123), at most
/// 53 characters so that `inventory-NAME` fits too.
pub fn parse_sync_name(name: &str) -> Result<String, ArgError> {
    let valid = !name.is_empty()
        && name.len() <= 53
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if valid {
        Ok(name.to_string())
    } else {
        Err(ArgError::invalid(
            name,
            "a sync name is 1-53 lower-case letters, digits and '-', starting and ending with a letter or digit",
        ))
    }
}

/// `flotilla sync`.
#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    #[command(flatten)]
    source: Source,
    #[command(flatten)]
    target: Target,
    /// Sync once and exit (the long-running agent is `flotilla run`).
    #[arg(long, required = true)]
    once: bool,
    /// Apply every object, even those whose content hash says they are unchanged.
    #[arg(long, env = "FLOTILLA_FORCE")]
    force: bool,
    /// Output format of the summary.
    #[arg(long, value_enum, default_value_t = ReportFormat::Table, env = "FLOTILLA_OUTPUT")]
    output: ReportFormat,
}

/// `flotilla diff`.
#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    #[command(flatten)]
    source: Source,
    #[command(flatten)]
    target: Target,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Table, env = "FLOTILLA_OUTPUT")]
    output: ReportFormat,
}

/// Formats of `sync` and `diff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// Text for people (a table, or unified diffs).
    Table,
    /// JSON for programs.
    Json,
}

/// The plan, the clusters to work on, and a runtime to do it with.
struct Prepared {
    plan: Plan,
    members: Vec<(String, Result<Member, ApplyError>)>,
    runtime: tokio::runtime::Runtime,
    options: SyncOptions,
}

fn prepare(source: &Source, target: &Target, force: bool) -> Result<Prepared, CliError> {
    let plan = load_plan(source)?;
    let runtime = super::runtime()?;
    let members = runtime.block_on(connect_targets(&plan, target))?;
    Ok(Prepared {
        plan,
        members,
        runtime,
        options: sync_options(target, force),
    })
}

/// The options of a sync to `target`.
fn sync_options(target: &Target, force: bool) -> SyncOptions {
    SyncOptions {
        name: target.name.clone(),
        concurrency: target.concurrency,
        force,
    }
}

/// Connects to the planned clusters that `target` names (every one when it names none).
async fn connect_targets(
    plan: &Plan,
    target: &Target,
) -> Result<Vec<(String, Result<Member, ApplyError>)>, CliError> {
    for name in &target.clusters {
        if !plan.desired.contains_key(name) {
            return Err(CliError::UnknownCluster(name.clone()));
        }
    }
    let names: Vec<String> = plan
        .desired
        .keys()
        .filter(|name| target.clusters.is_empty() || target.clusters.contains(name))
        .cloned()
        .collect();
    connect_all(&target.kubeconfig, &names)
        .await
        .map_err(|error| match error {
            ApplyError::Kubeconfig { path, problem } => CliError::Path { path, problem },
            other => CliError::Path {
                path: target.kubeconfig.clone(),
                problem: other.to_string(),
            },
        })
}

fn print_plan_errors(plan: &Plan) {
    for warning in &plan.warnings {
        eprintln!("warning: {}", warning.message);
    }
    for error in &plan.errors {
        eprintln!("error: {error} (whatever was applied of it stays)");
    }
}

/// `flotilla sync --once`: [`sync_commit`] of the fleet path, each planned cluster applied at
/// once.
pub fn sync_command(args: SyncArgs, stdout: &mut dyn Write) -> Result<Outcome, CliError> {
    let (root, fleet_path) = locate(&args.source.path, args.source.root.as_deref())?;
    let repo = Repo::Directory(root);
    let mut once = ApplyOnce {
        target: &args.target,
        options: sync_options(&args.target, args.force),
    };
    let runtime = super::runtime()?;
    let synced = runtime.block_on(sync_commit(
        &repo,
        &fleet_path,
        args.source.limits.into(),
        &mut once,
    ))?;
    // A directory is synced on every call: `ApplyOnce` always asks for it.
    let (plan_clean, reports) = synced.transpose()?.unwrap_or((true, Vec::new()));
    let stdout_path = PathBuf::from("(stdout)");
    let text = match args.output {
        ReportFormat::Json => serde_json::to_string_pretty(&reports)
            .map_err(|error| CliError::Serialise(error.to_string()))?,
        ReportFormat::Table => sync_table(&reports),
    };
    writeln!(stdout, "{}", text.trim_end()).map_err(write_error(&stdout_path))?;
    let all_synced = reports
        .iter()
        .all(|report| report.status == ClusterStatus::Synced);
    Ok(if all_synced && plan_clean {
        Outcome::Success
    } else {
        Outcome::Failed
    })
}

/// `sync --once`'s side of [`sync_commit`]: every commit is placed, and handing it out means
/// applying every targeted cluster's set now.
struct ApplyOnce<'a> {
    target: &'a Target,
    options: SyncOptions,
}

impl Clusters for ApplyOnce<'_> {
    /// Whether the plan had no resource errors, and each cluster's report.
    type Handed = Result<(bool, Vec<ClusterReport>), CliError>;

    fn inputs_for(&mut self, _commit: &str) -> Option<PlaceInputs> {
        // Offline there is no previous result: every capacity-based division is a first
        // schedule, with no capacity known (such resources fail, as in `plan`).
        Some(PlaceInputs::default())
    }

    async fn hand(&mut self, placed: Placed) -> Self::Handed {
        let Placed { commit, plan, .. } = placed;
        let members = connect_targets(&plan, self.target).await?;
        print_plan_errors(&plan);
        let reports = apply_fleet(&plan, Some(&commit), &members, &self.options, |report| {
            eprintln!("{}", progress_line(report));
        })
        .await;
        Ok((plan.errors.is_empty(), reports))
    }
}

fn progress_line(report: &ClusterReport) -> String {
    match &report.error {
        Some(error) => format!("{}: failed: {error}", report.cluster),
        None => format!(
            "{}: {}: {} applied, {} unchanged, {} pruned, {} failed ({:.2} s)",
            report.cluster,
            status_word(report.status),
            report.applied.len(),
            report.unchanged.len(),
            report.pruned.len(),
            report.failed.len(),
            report.duration.as_secs_f64()
        ),
    }
}

fn status_word(status: ClusterStatus) -> &'static str {
    match status {
        ClusterStatus::Synced => "synced",
        ClusterStatus::Degraded => "degraded",
        ClusterStatus::Failed => "failed",
    }
}

/// The summary of a sync: one row per cluster, then every failure and kept object.
pub fn sync_table(reports: &[ClusterReport]) -> String {
    let mut rows = vec![
        [
            "CLUSTER",
            "STATUS",
            "APPLIED",
            "UNCHANGED",
            "PRUNED",
            "FAILED",
            "WRITES",
            "SECONDS",
        ]
        .map(String::from),
    ];
    for report in reports {
        rows.push([
            report.cluster.clone(),
            status_word(report.status).into(),
            report.applied.len().to_string(),
            report.unchanged.len().to_string(),
            report.pruned.len().to_string(),
            report.failed.len().to_string(),
            report.writes.to_string(),
            format!("{:.2}", report.duration.as_secs_f64()),
        ]);
    }
    let mut out = aligned(&rows);
    for report in reports {
        if let Some(error) = &report.error {
            out.push_str(&format!("\n{}: {error}", report.cluster));
        }
        for failed in &report.failed {
            out.push_str(&format!(
                "\n{}: {}: {}",
                report.cluster,
                failed.object,
                shortened(&failed.reason)
            ));
        }
        for kept in &report.kept {
            out.push_str(&format!(
                "\n{}: {}: not pruned: {}",
                report.cluster, kept.object, kept.reason
            ));
        }
    }
    out
}

/// Apiserver messages can list hundreds of fields; the table shows the start of each.
fn shortened(reason: &str) -> String {
    const SHOWN: usize = 600;
    match reason.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!(
            "{}... ({} more characters; --output json has them all)",
            &reason[..cut],
            reason.len() - cut
        ),
        None => reason.to_string(),
    }
}

/// `flotilla diff`.
pub fn diff_command(args: DiffArgs, stdout: &mut dyn Write) -> Result<Outcome, CliError> {
    let Prepared {
        plan,
        members,
        runtime,
        options,
    } = prepare(&args.source, &args.target, false)?;
    print_plan_errors(&plan);
    let diffs: Vec<ClusterDiff> = runtime.block_on(futures::future::join_all(members.iter().map(
        |(name, member)| {
            let plan = &plan;
            let options = &options;
            async move {
                match member {
                    Ok(member) => {
                        let desired = plan.desired.get(name).map(Vec::as_slice).unwrap_or(&[]);
                        diff_cluster(member, desired, &kept_by_plan_errors(plan, name), options)
                            .await
                    }
                    Err(error) => ClusterDiff {
                        cluster: name.clone(),
                        error: Some(error.to_string()),
                        changes: Vec::new(),
                        failed: Vec::new(),
                    },
                }
            }
        },
    )));
    let stdout_path = PathBuf::from("(stdout)");
    let text = match args.output {
        ReportFormat::Json => serde_json::to_string_pretty(&diffs)
            .map_err(|error| CliError::Serialise(error.to_string()))?,
        ReportFormat::Table => diff_text(&diffs),
    };
    writeln!(stdout, "{}", text.trim_end()).map_err(write_error(&stdout_path))?;
    let clean = diffs
        .iter()
        .all(|diff| diff.error.is_none() && diff.failed.is_empty());
    Ok(if clean && plan.errors.is_empty() {
        Outcome::Success
    } else {
        Outcome::Failed
    })
}

/// Per cluster: a count line, then the unified diff of every object that would change.
pub fn diff_text(diffs: &[ClusterDiff]) -> String {
    let mut out = String::new();
    for diff in diffs {
        let count = |change: Change| diff.changes.iter().filter(|c| c.change == change).count();
        match &diff.error {
            Some(error) => out.push_str(&format!("=== {}: failed: {error}\n", diff.cluster)),
            None => out.push_str(&format!(
                "=== {}: {} to create, {} to update, {} to delete, {} refused\n",
                diff.cluster,
                count(Change::Create),
                count(Change::Update),
                count(Change::Delete),
                diff.failed.len()
            )),
        }
        for change in &diff.changes {
            out.push_str(&change.diff);
        }
        for failed in &diff.failed {
            out.push_str(&format!(
                "refused: {}: {}\n",
                failed.object,
                shortened(&failed.reason)
            ));
        }
    }
    out
}
