//! `flotilla plan`: where each resource goes, with its replicas, as a table or JSON.

use std::io::Write;
use std::path::PathBuf;

use clap::ValueEnum;

use super::{
    CliError, Outcome, Source, aligned, load_capacity, load_plan_with, outcome, write_error,
};
use crate::placement::{self, Plan};

/// `flotilla plan`.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub(super) source: Source,
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

/// Formats of `plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    /// A table for people.
    Table,
    /// JSON for programs.
    Json,
}

pub(super) fn plan_command(args: PlanArgs, stdout: &mut dyn Write) -> Result<Outcome, CliError> {
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
