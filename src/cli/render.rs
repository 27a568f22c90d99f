//! `flotilla render`: the objects each cluster would get, as YAML or a directory tree.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::ValueEnum;
use serde_json::Value;

use super::{CliError, Outcome, Source, load_capacity, load_plan_with, outcome, write_error};
use crate::object::Object;

/// `flotilla render`.
#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    #[command(flatten)]
    pub(super) source: Source,
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

/// Formats of `render`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RenderFormat {
    /// YAML documents.
    Yaml,
    /// One JSON object: cluster name -> objects.
    Json,
}

pub(super) fn render_command(
    args: RenderArgs,
    stdout: &mut dyn Write,
) -> Result<Outcome, CliError> {
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
