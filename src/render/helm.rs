//! kustomize's `helmCharts` / `helmGlobals` (its HelmChartInflationGenerator, as run by
//! `kubectl kustomize --enable-helm`): each chart is inflated by the real `helm template`, never
//! by a re-implementation of Helm's templates, with kustomize v5.5.0's arguments and defaults.
//!
//! Helm is the binary named by `FLOTILLA_HELM`, else `helm` on `PATH`. It runs with a timeout and
//! a cap on its output, and with its config, cache and data homes in a private temporary
//! directory, where the values file is written too: nothing is written into the repository.
//! Unlike kustomize, helm does not inherit the environment (see [`HelmRunner`]'s `run`), so that
//! `.Release.Namespace` is `default` everywhere unless the chart sets `namespace`.
//! A chart is read from the chart home in the repository; it is pulled (into that temporary
//! directory) only when it is missing there and the chart names a `repo`, as kustomize does.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Map, Value};

use super::RenderError;
use super::load::{Dialect, Repo, parse_objects_with};
use crate::object::{Object, Origin};

/// The environment variable naming the helm binary.
pub const HELM_ENV: &str = "FLOTILLA_HELM";

/// How long one helm run may take before it is killed.
const HELM_TIMEOUT: Duration = Duration::from_secs(60);

/// Largest `helm template` output read (charts with big CRDs render a few MiB).
const MAX_HELM_OUTPUT: usize = 64 * 1024 * 1024;

/// Largest helm error output kept for a message.
const MAX_HELM_STDERR: usize = 64 * 1024;

/// Most directory entries checked in one chart (for symlinks that leave the repository).
const MAX_CHART_ENTRIES: usize = 20_000;

/// Deepest directory nesting checked in one chart.
const MAX_CHART_DEPTH: usize = 32;

/// The only variables of Flotilla's environment helm sees (for finding programs and proxies).
const PASSED_ENV: &[&str] = &[
    "PATH",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// kustomize's default chart home, relative to the kustomization (`types.HelmDefaultHome`).
const DEFAULT_CHART_HOME: &str = "charts";

/// `helmGlobals`: settings shared by every chart of one kustomization.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HelmGlobals {
    /// Directory holding one sub-directory per chart, relative to the kustomization.
    chart_home: Option<String>,
    /// Helm's config home; refused (Flotilla gives helm a private, empty one).
    config_home: Option<String>,
}

/// One `helmCharts` entry (kustomize's `types.HelmChart` of api v0.18.0).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HelmChart {
    #[serde(default)]
    name: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    repo: String,
    #[serde(default)]
    release_name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    additional_values_files: Vec<String>,
    #[serde(default)]
    values_file: String,
    #[serde(default)]
    values_inline: Option<Map<String, Value>>,
    #[serde(default)]
    values_merge: String,
    #[serde(default, rename = "includeCRDs")]
    include_crds: bool,
    #[serde(default)]
    skip_hooks: bool,
    #[serde(default)]
    api_versions: Vec<String>,
    #[serde(default)]
    kube_version: String,
    #[serde(default)]
    name_template: String,
    #[serde(default)]
    skip_tests: bool,
    #[serde(default)]
    debug: bool,
}

impl HelmChart {
    /// Sets the valuesInline value at `path` (keys and list indexes), where one is.
    pub(crate) fn set_inline(&mut self, path: &[String], value: Value) {
        let (Some((first, rest)), Some(inline)) = (path.split_first(), self.values_inline.as_mut())
        else {
            return;
        };
        let mut slot = inline.get_mut(first);
        for step in rest {
            slot = match slot {
                Some(Value::Object(map)) => map.get_mut(step),
                Some(Value::Array(items)) => {
                    step.parse::<usize>().ok().and_then(|i| items.get_mut(i))
                }
                _ => None,
            };
        }
        if let Some(slot) = slot.filter(|s| s.is_string()) {
            *slot = value;
        }
    }
}

/// How a helm binary is run: which one, for how long, how much output is read.
#[derive(Debug, Clone)]
pub struct HelmRunner {
    /// The helm binary.
    pub program: PathBuf,
    /// Kill helm after this long.
    pub timeout: Duration,
    /// Refuse more stdout than this.
    pub max_output: usize,
}

impl HelmRunner {
    /// The runner from `FLOTILLA_HELM`, else `helm` on `PATH`, with the default limits.
    pub fn from_env() -> Self {
        let program = std::env::var_os(HELM_ENV)
            .filter(|value| !value.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("helm"));
        HelmRunner {
            program,
            timeout: HELM_TIMEOUT,
            max_output: MAX_HELM_OUTPUT,
        }
    }

    /// Runs helm with `args`, its homes below `home` (kustomize's HELM_CONFIG_HOME, and
    /// HELM_CACHE_HOME / HELM_DATA_HOME below it); returns stdout, or why it failed.
    fn run(&self, args: &[OsString], home: &Path) -> Result<Vec<u8>, String> {
        let described = || {
            let mut line = self.program.display().to_string();
            for arg in args {
                line.push(' ');
                line.push_str(&arg.to_string_lossy());
            }
            line
        };
        let mut command = Command::new(&self.program);
        // A clean environment: HELM_NAMESPACE, a kubeconfig context or a pod's service account
        // would otherwise change `.Release.Namespace`, so the hub and a laptop would differ.
        command.env_clear();
        for name in PASSED_ENV {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        let mut child = command
            .args(args)
            .env("KUBECONFIG", home.join("no-kubeconfig"))
            .env("HELM_CONFIG_HOME", home)
            .env("HELM_CACHE_HOME", home.join(".cache"))
            .env("HELM_DATA_HOME", home.join(".data"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| {
                format!(
                    "cannot run helm {:?}: {error} (install helm v3 or set {HELM_ENV} to its path)",
                    self.program
                )
            })?;
        // Readers stop at their cap and close the pipe, so a flood cannot fill memory.
        let stdout = child.stdout.take().map(|pipe| {
            let cap = self.max_output;
            std::thread::spawn(move || read_capped(pipe, cap))
        });
        let stderr = child
            .stderr
            .take()
            .map(|pipe| std::thread::spawn(move || read_capped(pipe, MAX_HELM_STDERR)));
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "`{}` did not finish within {} s and was killed",
                        described(),
                        self.timeout.as_secs()
                    ));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(error) => {
                    let _ = child.kill();
                    return Err(format!("waiting for `{}`: {error}", described()));
                }
            }
        };
        let stdout = stdout
            .and_then(|reader| reader.join().ok())
            .unwrap_or_default();
        let stderr = stderr
            .and_then(|reader| reader.join().ok())
            .unwrap_or_default();
        if stdout.len() > self.max_output {
            return Err(format!(
                "`{}` wrote more than {} bytes",
                described(),
                self.max_output
            ));
        }
        if !status.success() {
            return Err(format!(
                "`{}` failed ({status}): {}",
                described(),
                String::from_utf8_lossy(&stderr).trim()
            ));
        }
        Ok(stdout)
    }

    /// kustomize's `checkHelmVersion`: only helm v3 is accepted.
    fn check_version(&self, home: &Path) -> Result<(), String> {
        let output = self.run(&["version".into(), "-c".into(), "--short".into()], home)?;
        let text = String::from_utf8_lossy(&output);
        match version_major(&text) {
            Some("3") => Ok(()),
            _ => Err(format!(
                "helm {:?} reports version {:?}; kustomize's helmCharts need helm v3",
                self.program,
                text.trim()
            )),
        }
    }
}

/// The major version of the first `N.N...` in `text` (kustomize's `v?\d+(\.\d+)+`).
fn version_major(text: &str) -> Option<&str> {
    text.split(|c: char| !c.is_ascii_digit() && c != '.')
        .find(|token| {
            let mut parts = token.split('.');
            parts.next().is_some_and(|p| !p.is_empty())
                && parts.next().is_some_and(|p| !p.is_empty())
        })
        .and_then(|token| token.split('.').next())
}

/// Reads at most `cap + 1` bytes (one more tells that the cap was passed), then drops the pipe.
fn read_capped(pipe: impl Read, cap: usize) -> Vec<u8> {
    let mut buffer = Vec::new();
    let _ = pipe
        .take(u64::try_from(cap).unwrap_or(u64::MAX).saturating_add(1))
        .read_to_end(&mut buffer);
    buffer
}

/// Inflates the `helmCharts` of the kustomization `file` in `dir` (both root-relative), in
/// order, with the helm of [`HelmRunner::from_env`].
pub fn inflate_charts(
    repo: &Repo,
    dir: &Path,
    file: &Path,
    charts: &[HelmChart],
    globals: Option<&HelmGlobals>,
) -> Result<Vec<Object>, RenderError> {
    if charts.is_empty() {
        return Ok(Vec::new());
    }
    let chart_set = ChartSet { repo, dir, file };
    let runner = HelmRunner::from_env();
    let mut objects = Vec::new();
    for (index, chart) in charts.iter().enumerate() {
        objects.extend(chart_set.inflate(chart, globals, index, &runner)?);
    }
    Ok(objects)
}

/// A kustomization's charts and where it is, for error messages and path resolution.
pub struct ChartSet<'a> {
    /// The repository.
    pub repo: &'a Repo,
    /// The kustomization's directory, root-relative.
    pub dir: &'a Path,
    /// The kustomization file, root-relative.
    pub file: &'a Path,
}

impl ChartSet<'_> {
    fn error(&self, field: impl Into<String>, problem: impl Into<String>) -> RenderError {
        RenderError::Kustomization {
            path: self.file.to_path_buf(),
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// Inflates one chart (`helmCharts[index]`) with `runner`.
    pub fn inflate(
        &self,
        chart: &HelmChart,
        globals: Option<&HelmGlobals>,
        index: usize,
        runner: &HelmRunner,
    ) -> Result<Vec<Object>, RenderError> {
        let field = format!("helmCharts[{index}]");
        if globals.and_then(|g| g.config_home.as_ref()).is_some() {
            return Err(self.error(
                "helmGlobals.configHome",
                "not supported: Flotilla runs helm with a private, empty config home",
            ));
        }
        if chart.name.is_empty() {
            return Err(self.error(format!("{field}.name"), "chart name cannot be empty"));
        }
        let values_merge = match chart.values_merge.as_str() {
            "" | "override" => ValuesMerge::Override,
            "merge" => ValuesMerge::Merge,
            "replace" => ValuesMerge::Replace,
            other => {
                return Err(self.error(
                    format!("{field}.valuesMerge"),
                    format!("{other:?} is not one of merge, override, replace"),
                ));
            }
        };
        let temp = tempfile::Builder::new()
            .prefix("flotilla-helm-")
            .tempdir()
            .map_err(|error| {
                self.error(
                    &field,
                    format!("cannot create a temporary directory for helm: {error}"),
                )
            })?;
        let helm_home = temp.path().join("helm");
        let chart_dir = self.chart_dir(chart, globals, &field, runner, temp.path(), &helm_home)?;

        // The values file: the chart's values.yaml unless `valuesFile` names one; kustomize
        // copies it (or writes it merged with valuesInline) into its temporary directory.
        let (values_path, values_text) = match chart.values_file.as_str() {
            "" => {
                let path = chart_dir.join("values.yaml");
                // Read as every other file, within --max-file-size (also a pulled chart's,
                // whose absolute path the repository reads as it is).
                let text = self.repo.read_to_string(&self.shown(&path)).map_err(|error| match error {
                    RenderError::Read { source, .. } => self.error(
                        format!("{field}.valuesFile"),
                        format!(
                            "the chart has no readable values.yaml ({}: {source}); kustomize requires one",
                            self.shown(&path).display()
                        ),
                    ),
                    limit => limit,
                })?;
                (self.shown(&path), text)
            }
            reference => {
                let field = format!("{field}.valuesFile");
                let path = self.resolve_file(reference, &field)?;
                let text = self.repo.read_to_string(&path)?;
                (path, text)
            }
        };
        let inline = chart.values_inline.as_ref().filter(|m| !m.is_empty());
        let values_bytes = match inline {
            None => values_text.into_bytes(),
            Some(inline) => {
                let merged = match values_merge {
                    ValuesMerge::Replace => Value::Object(inline.clone()),
                    ValuesMerge::Override | ValuesMerge::Merge => {
                        let file_values = parse_values(&values_text).map_err(|problem| {
                            self.error(
                                format!("{field}.valuesInline"),
                                format!(
                                    "{}: {problem} (kustomize merges valuesInline into it)",
                                    values_path.display()
                                ),
                            )
                        })?;
                        let inline = Value::Object(inline.clone());
                        let (winner, base) = match values_merge {
                            ValuesMerge::Override => (inline, file_values),
                            _ => (file_values, inline),
                        };
                        merge_values(winner, base).map_err(|problem| {
                            self.error(format!("{field}.valuesInline"), problem)
                        })?
                    }
                };
                // kustomize writes the map through JSON: whole floats become integers.
                serde_json::to_vec(&integral_floats_as_integers(merged)).map_err(|error| {
                    self.error(format!("{field}.valuesInline"), error.to_string())
                })?
            }
        };
        let safe_name = chart.name.replace(['/', '\\'], "_");
        let written_values = temp
            .path()
            .join(format!("{safe_name}-kustomize-values.yaml"));
        std::fs::write(&written_values, values_bytes).map_err(|error| {
            self.error(
                &field,
                format!("cannot write the helm values file: {error}"),
            )
        })?;

        let mut additional = Vec::new();
        for (i, reference) in chart.additional_values_files.iter().enumerate() {
            let path =
                self.resolve_file(reference, &format!("{field}.additionalValuesFiles[{i}]"))?;
            additional.push(self.repo.absolute(&path));
        }

        runner
            .check_version(&helm_home)
            .map_err(|problem| self.error(&field, problem))?;
        let args = template_args(chart, &chart_dir, &written_values, &additional);
        let output = runner
            .run(&args, &helm_home)
            .map_err(|problem| self.error(&field, problem))?;
        let text = String::from_utf8(output)
            .map_err(|_| self.error(&field, "helm template wrote output that is not UTF-8"))?;
        let objects = parse_objects_with(&text, &self.file.join(&field), Dialect::Kustomize)
            .map_err(|error| {
                self.error(
                    &field,
                    format!("helm template output is not usable: {error}"),
                )
            })?;
        self.repo.count_objects(objects.len(), self.file)?;
        Ok(objects
            .into_iter()
            .map(|object| Object::new(object.value, Origin::generated(self.file)))
            .collect())
    }

    /// Resolves a values file named at `field`: inside the repository, and a file.
    fn resolve_file(&self, reference: &str, field: &str) -> Result<PathBuf, RenderError> {
        let path = match self.repo.resolve(self.dir, reference, self.file) {
            Ok(path) => path,
            Err(RenderError::Read { path, source }) => {
                return Err(self.error(field, format!("{}: {source}", path.display())));
            }
            Err(other) => return Err(other),
        };
        if !self.repo.absolute(&path).is_file() {
            return Err(self.error(field, format!("{} is not a file", path.display())));
        }
        Ok(path)
    }

    /// A path for messages: root-relative when inside the repository.
    fn shown(&self, path: &Path) -> PathBuf {
        path.strip_prefix(self.repo.root())
            .unwrap_or(path)
            .to_path_buf()
    }

    /// The chart's directory: `<chartHome>/<name>`, or `<chartHome>/<name>-<version>/<name>` when
    /// both `version` and `repo` are set (kustomize's `absChartHome`); pulled when missing and
    /// `repo` is set.
    fn chart_dir(
        &self,
        chart: &HelmChart,
        globals: Option<&HelmGlobals>,
        field: &str,
        runner: &HelmRunner,
        temp: &Path,
        helm_home: &Path,
    ) -> Result<PathBuf, RenderError> {
        let chart_home = globals
            .and_then(|g| g.chart_home.as_deref())
            .filter(|home| !home.is_empty())
            .unwrap_or(DEFAULT_CHART_HOME);
        let versioned = !chart.version.is_empty() && !chart.repo.is_empty();
        let below_home = if versioned {
            format!("{}-{}/{}", chart.name, chart.version, chart.name)
        } else {
            chart.name.clone()
        };
        let written = Path::new(chart_home).join(&below_home);
        let reference = written.to_string_lossy();
        match self.repo.resolve(self.dir, &reference, self.file) {
            Ok(path) if self.repo.absolute(&path).is_dir() => {
                let absolute = self.repo.absolute(&path);
                self.check_chart_links(&absolute, field)?;
                return Ok(absolute);
            }
            Ok(_) | Err(RenderError::Read { .. }) => {}
            Err(other) => return Err(other),
        }
        let missing = self.dir.join(&written);
        if chart.repo.is_empty() {
            return Err(self.error(
                field,
                format!(
                    "no chart at {} and no `repo` to pull it from; vendor the chart there \
                     (helmGlobals.chartHome, default `charts` beside the kustomization)",
                    missing.display()
                ),
            ));
        }
        // Pulled into the temporary directory, never into the repository.
        let pull_home = if versioned {
            temp.join("charts")
                .join(format!("{}-{}", chart.name, chart.version))
        } else {
            temp.join("charts")
        };
        runner
            .check_version(helm_home)
            .map_err(|problem| self.error(field, problem))?;
        runner
            .run(&pull_args(chart, &pull_home), helm_home)
            .map_err(|problem| {
                self.error(
                    field,
                    format!(
                        "no chart at {} and pulling {:?} from {} failed; vendor the chart into {} \
                         (Flotilla renders offline): {problem}",
                        missing.display(),
                        chart.name,
                        chart.repo,
                        missing.display()
                    ),
                )
            })?;
        Ok(pull_home.join(&chart.name))
    }

    /// Refuses a chart with a symlink leading outside the repository: helm follows them, and
    /// `.Files.Get` would copy what they point at into the cluster.
    fn check_chart_links(&self, chart_dir: &Path, field: &str) -> Result<(), RenderError> {
        let mut pending = vec![(chart_dir.to_path_buf(), 0usize)];
        let mut seen = 0usize;
        while let Some((dir, depth)) = pending.pop() {
            let entries = std::fs::read_dir(&dir).map_err(|source| RenderError::Read {
                path: self.shown(&dir),
                source,
            })?;
            for entry in entries.filter_map(Result::ok) {
                seen += 1;
                if seen > MAX_CHART_ENTRIES {
                    return Err(self.error(
                        field,
                        format!(
                            "chart {} has over {MAX_CHART_ENTRIES} files",
                            self.shown(chart_dir).display()
                        ),
                    ));
                }
                let path = entry.path();
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                if kind.is_symlink() {
                    let inside = path
                        .canonicalize()
                        .is_ok_and(|real| real.starts_with(self.repo.root()));
                    if !inside {
                        return Err(RenderError::PathEscape {
                            path: self.file.to_path_buf(),
                            reference: self.shown(&path).display().to_string(),
                        });
                    }
                }
                // A linked directory is followed too (helm does); the caps bound link cycles.
                if kind.is_dir() || (kind.is_symlink() && path.is_dir()) {
                    if depth + 1 > MAX_CHART_DEPTH {
                        return Err(self.error(
                            field,
                            format!(
                                "chart {} nests directories deeper than {MAX_CHART_DEPTH}",
                                self.shown(chart_dir).display()
                            ),
                        ));
                    }
                    pending.push((path, depth + 1));
                }
            }
        }
        Ok(())
    }
}

/// kustomize's `valuesMerge`: which side wins when valuesInline meets the values file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ValuesMerge {
    /// valuesInline wins (the default).
    Override,
    /// The values file wins.
    Merge,
    /// valuesInline alone.
    Replace,
}

/// kustomize's `HelmChart.AsHelmArgs`, with the values file it wrote.
fn template_args(
    chart: &HelmChart,
    chart_dir: &Path,
    values_file: &Path,
    additional_values: &[PathBuf],
) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["template".into()];
    if chart.release_name.is_empty() {
        args.push("--generate-name".into());
    } else {
        args.push(chart.release_name.clone().into());
    }
    args.push(chart_dir.into());
    let mut flag = |name: &str, value: &str| {
        args.push(name.into());
        args.push(value.into());
    };
    if !chart.namespace.is_empty() {
        flag("--namespace", &chart.namespace);
    }
    if !chart.name_template.is_empty() {
        flag("--name-template", &chart.name_template);
    }
    args.push("-f".into());
    args.push(values_file.into());
    for path in additional_values {
        args.push("-f".into());
        args.push(path.into());
    }
    for api_version in &chart.api_versions {
        args.push("--api-versions".into());
        args.push(api_version.into());
    }
    if !chart.kube_version.is_empty() {
        args.push("--kube-version".into());
        args.push(chart.kube_version.clone().into());
    }
    for (set, name) in [
        (chart.include_crds, "--include-crds"),
        (chart.skip_tests, "--skip-tests"),
        (chart.skip_hooks, "--no-hooks"),
        (chart.debug, "--debug"),
    ] {
        if set {
            args.push(name.into());
        }
    }
    args
}

/// kustomize's `pullCommand`.
fn pull_args(chart: &HelmChart, into: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["pull".into(), "--untar".into(), "--untardir".into()];
    args.push(into.into());
    if chart.repo.starts_with("oci://") {
        args.push(format!("{}/{}", chart.repo.trim_end_matches('/'), chart.name).into());
    } else {
        args.push("--repo".into());
        args.push(chart.repo.clone().into());
        args.push(chart.name.clone().into());
    }
    if !chart.version.is_empty() {
        args.push("--version".into());
        args.push(chart.version.clone().into());
    }
    args
}

/// Parses a values file the way kustomize's kyaml (YAML 1.2 booleans, `0644` octal) reads it.
fn parse_values(text: &str) -> Result<Value, String> {
    let documents: Vec<Value> = serde_saphyr::from_multiple_with_options(
        text,
        serde_saphyr::options! {
            legacy_octal_numbers: true,
            strict_booleans: true,
            with_snippet: false,
            alias_limits: serde_saphyr::alias_limits! {
                max_total_replayed_events: 100_000,
                max_replay_stack_depth: 16,
            },
        },
    )
    .map_err(|error| error.to_string().lines().next().unwrap_or("").to_string())?;
    match documents.into_iter().next() {
        // kyaml cannot parse a values file without a document (only comments, or nothing).
        None => Err("the values file has no YAML document".into()),
        Some(Value::Null) => Ok(Value::Object(Map::new())),
        Some(value @ Value::Object(_)) => Ok(value),
        Some(_) => Err("the values file is not a mapping".into()),
    }
}

/// kyaml's `merge2.Merge(winner, base)` without a schema: maps merge key by key, a null in
/// `winner` removes the key (and adds none where `base` lacks it), anything else in `winner`
/// (scalars, lists) replaces.
fn merge_values(winner: Value, base: Value) -> Result<Value, String> {
    merge_at(winner, base, "", 0)
}

/// Deepest values nesting merged (far beyond real charts; bounds the recursion).
const MAX_VALUES_DEPTH: usize = 64;

fn merge_at(winner: Value, base: Value, path: &str, depth: usize) -> Result<Value, String> {
    if depth > MAX_VALUES_DEPTH {
        return Err(format!(
            "values nest deeper than {MAX_VALUES_DEPTH} at {path}"
        ));
    }
    match (winner, base) {
        (Value::Object(winner), Value::Object(mut base)) => {
            for (key, value) in winner {
                let field = format!("{path}.{key}");
                match (value, base.remove(&key)) {
                    (Value::Null, Some(Value::Null)) => {
                        base.insert(key, Value::Null);
                    }
                    // A null clears the field: there is none to clear when `base` lacks it.
                    (Value::Null, _) => {}
                    (value, None | Some(Value::Null)) => {
                        base.insert(key, without_null_fields(value));
                    }
                    (value, Some(existing)) => {
                        base.insert(key, merge_at(value, existing, &field, depth + 1)?);
                    }
                }
            }
            Ok(Value::Object(base))
        }
        // kyaml refuses to merge nodes of different kinds ("wrong node kind").
        (winner, base)
            if !winner.is_null() && !base.is_null() && kind_of(&winner) != kind_of(&base) =>
        {
            Err(format!(
                "cannot merge {} into {} at {}",
                kind_of(&winner),
                kind_of(&base),
                if path.is_empty() { "." } else { path }
            ))
        }
        (winner, _) => Ok(winner),
    }
}

/// A mapping kyaml copies into a merge result where the other side has nothing: its null
/// fields clear nothing and are left out, at every depth (lists are copied as they are).
fn without_null_fields(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_null_fields(v)))
                .collect(),
        ),
        other => other,
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Object(_) => "a mapping",
        Value::Array(_) => "a list",
        _ => "a scalar",
    }
}

/// Go's JSON writes float64 `1.0` as `1`; values go through it in kustomize.
fn integral_floats_as_integers(value: Value) -> Value {
    match value {
        Value::Number(number) if !number.is_i64() && !number.is_u64() => {
            match number.as_f64() {
                Some(float) if float.fract() == 0.0 && float.abs() < 9.0e15 => {
                    // In range and whole: exact as an integer.
                    Value::from(float as i64)
                }
                _ => Value::Number(number),
            }
        }
        Value::Array(items) => {
            Value::Array(items.into_iter().map(integral_floats_as_integers).collect())
        }
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, integral_floats_as_integers(v)))
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::tests::write;
    use std::os::unix::fs::PermissionsExt;

    /// A repository with `app/kustomization.yaml` and a minimal chart `app/charts/web`.
    fn repo_with_chart() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "app/kustomization.yaml",
            "helmCharts: [{name: web}]\n",
        );
        write(
            dir.path(),
            "app/charts/web/Chart.yaml",
            "apiVersion: v2\nname: web\nversion: 1.0.0\n",
        );
        write(dir.path(), "app/charts/web/values.yaml", "replicas: 1\n");
        dir
    }

    /// A stand-in helm: a shell script answering `version` as helm v3 and running `body` for
    /// anything else.
    fn fake_helm(dir: &Path, body: &str) -> HelmRunner {
        let program = dir.join("helm");
        std::fs::write(
            &program,
            format!("#!/bin/sh\nif [ \"$1\" = version ]; then echo v3.22.0; exit 0; fi\n{body}\n"),
        )
        .unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        HelmRunner {
            program,
            timeout: Duration::from_secs(20),
            max_output: 4096,
        }
    }

    fn inflate_with(
        root: &Path,
        chart: &str,
        globals: Option<&str>,
        runner: &HelmRunner,
    ) -> Result<Vec<Object>, RenderError> {
        let repo = Repo::open(root).unwrap();
        let chart: HelmChart = serde_saphyr::from_str(chart).unwrap();
        let globals: Option<HelmGlobals> = globals.map(|g| serde_saphyr::from_str(g).unwrap());
        ChartSet {
            repo: &repo,
            dir: Path::new("app"),
            file: Path::new("app/kustomization.yaml"),
        }
        .inflate(&chart, globals.as_ref(), 2, runner)
    }

    fn error_text(result: Result<Vec<Object>, RenderError>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn a_missing_chart_without_repo_names_the_field_and_says_to_vendor_it() {
        let repo = repo_with_chart();
        let runner = fake_helm(repo.path(), "exit 1");
        let error = error_text(inflate_with(repo.path(), "name: api", None, &runner));
        assert!(
            error.starts_with("app/kustomization.yaml: helmCharts[2]:"),
            "{error}"
        );
        assert!(
            error.contains("app/charts/api") && error.contains("vendor"),
            "{error}"
        );
    }

    #[test]
    fn a_failed_pull_says_to_vendor_the_chart_into_the_chart_home() {
        let repo = repo_with_chart();
        let runner = fake_helm(repo.path(), "echo 'dial tcp: no route to host' >&2; exit 1");
        let error = error_text(inflate_with(
            repo.path(),
            "{name: api, repo: 'https://charts.example.com', version: 2.0.0}",
            Some("chartHome: vendor"),
            &runner,
        ));
        assert!(error.contains("helmCharts[2]"), "{error}");
        assert!(
            error.contains("vendor the chart into app/vendor/api-2.0.0/api"),
            "{error}"
        );
        assert!(error.contains("no route to host"), "{error}");
    }

    #[test]
    fn a_missing_helm_binary_is_named_with_the_field() {
        let repo = repo_with_chart();
        let runner = HelmRunner {
            program: repo.path().join("no-such-helm"),
            ..HelmRunner::from_env()
        };
        let error = error_text(inflate_with(repo.path(), "name: web", None, &runner));
        assert!(
            error.starts_with("app/kustomization.yaml: helmCharts[2]:"),
            "{error}"
        );
        assert!(
            error.contains("no-such-helm") && error.contains(HELM_ENV),
            "{error}"
        );
    }

    #[test]
    fn helm_v2_is_refused() {
        let repo = repo_with_chart();
        let mut runner = fake_helm(repo.path(), "exit 0");
        std::fs::write(
            &runner.program,
            "#!/bin/sh\necho 'Client: v2.17.0+ga690bad'\n",
        )
        .unwrap();
        runner.timeout = Duration::from_secs(20);
        let error = error_text(inflate_with(repo.path(), "name: web", None, &runner));
        assert!(error.contains("need helm v3"), "{error}");
    }

    #[test]
    fn helm_versions_are_read_like_kustomize() {
        assert_eq!(version_major("v3.22.0+g1234567\n"), Some("3"));
        assert_eq!(version_major("Client: v2.17.0+ga690bad"), Some("2"));
        assert_eq!(version_major("4.0.0"), Some("4"));
        assert_eq!(version_major("helm v3"), None);
    }

    #[test]
    fn a_hanging_helm_is_killed_at_the_timeout() {
        let repo = repo_with_chart();
        let mut runner = fake_helm(repo.path(), "sleep 60");
        runner.timeout = Duration::from_millis(500);
        let started = Instant::now();
        let error = error_text(inflate_with(repo.path(), "name: web", None, &runner));
        assert!(error.contains("was killed"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn output_over_the_cap_is_refused() {
        let repo = repo_with_chart();
        let runner = fake_helm(repo.path(), "yes 'a: b'");
        let error = error_text(inflate_with(repo.path(), "name: web", None, &runner));
        assert!(error.contains("more than 4096 bytes"), "{error}");
    }

    #[test]
    fn kustomize_arguments_and_values_stay_outside_the_repository() {
        let repo = repo_with_chart();
        write(repo.path(), "app/extra.yaml", "region: eu\n");
        // The fake helm prints its arguments and the values file it got as a ConfigMap.
        let runner = fake_helm(
            repo.path(),
            r#"printf 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: args}\ndata:\n  args: "%s"\n' "$*"
shift 3; while [ "$1" != -f ]; do shift; done
printf "  values: '%s'\n" "$(cat "$2")""#,
        );
        let before: Vec<_> = walk(repo.path());
        let objects = inflate_with(
            repo.path(),
            "{name: web, namespace: shop, includeCRDs: true, skipTests: true, \
             additionalValuesFiles: [extra.yaml], valuesInline: {replicas: 2.0, extra: {a: 1}}}",
            None,
            &runner,
        )
        .unwrap();
        let args = objects[0].value["data"]["args"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(args.starts_with("template --generate-name "), "{args}");
        assert!(
            args.contains("/app/charts/web --namespace shop -f "),
            "{args}"
        );
        assert!(args.contains("web-kustomize-values.yaml -f "), "{args}");
        assert!(
            args.ends_with("/app/extra.yaml --include-crds --skip-tests"),
            "{args}"
        );
        let values = objects[0].value["data"]["values"].as_str().unwrap();
        assert_eq!(values, r#"{"extra":{"a":1},"replicas":2}"#);
        assert_eq!(
            objects[0].origin,
            Origin::generated("app/kustomization.yaml")
        );
        assert_eq!(
            walk(repo.path()),
            before,
            "nothing may be written into the repository"
        );
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(walk(&path));
            }
            out.push(path);
        }
        out.sort();
        out
    }

    #[test]
    fn paths_leaving_the_repository_are_refused() {
        let repo = repo_with_chart();
        let runner = fake_helm(repo.path(), "exit 1");
        let outside = tempfile::tempdir().unwrap();
        write(outside.path(), "web/Chart.yaml", "name: web\n");
        for (chart, globals) in [
            ("{name: web, valuesFile: ../../../etc/passwd}", None),
            ("{name: web, additionalValuesFiles: [/etc/passwd]}", None),
            ("name: web", Some("chartHome: ../..")),
        ] {
            let error = inflate_with(repo.path(), chart, globals, &runner).unwrap_err();
            assert!(
                matches!(error, RenderError::PathEscape { .. }),
                "{chart}: {error}"
            );
        }
        std::os::unix::fs::symlink(
            outside.path().join("web/Chart.yaml"),
            repo.path().join("app/charts/web/templates.yaml"),
        )
        .unwrap();
        let error = inflate_with(repo.path(), "name: web", None, &runner).unwrap_err();
        assert!(matches!(error, RenderError::PathEscape { .. }), "{error}");
    }

    #[test]
    fn bad_values_settings_name_their_field() {
        let repo = repo_with_chart();
        let runner = fake_helm(repo.path(), "exit 1");
        let cases = [
            (
                "{name: web, valuesMerge: deep}",
                None,
                "helmCharts[2].valuesMerge:",
            ),
            (
                "{name: web, valuesInline: {replicas: [1]}}",
                None,
                "helmCharts[2].valuesInline: cannot merge a list into a scalar at .replicas",
            ),
            (
                "name: web",
                Some("configHome: /tmp/helm"),
                "helmGlobals.configHome:",
            ),
            (
                "{name: web, valuesFile: none.yaml}",
                None,
                "helmCharts[2].valuesFile: app/none.yaml: No such file",
            ),
            (
                "{name: web, additionalValuesFiles: [charts]}",
                None,
                "helmCharts[2].additionalValuesFiles[0]: app/charts is not a file",
            ),
        ];
        for (chart, globals, expected) in cases {
            let error = error_text(inflate_with(repo.path(), chart, globals, &runner));
            assert!(error.contains(expected), "{chart}: {error}");
        }
        // kyaml cannot merge valuesInline into a values file of comments only.
        write(repo.path(), "app/charts/web/values.yaml", "# nothing yet\n");
        let chart = "{name: web, valuesInline: {replicas: 2}}";
        let error = error_text(inflate_with(repo.path(), chart, None, &runner));
        assert!(error.contains("no YAML document"), "{error}");
    }

    #[test]
    fn values_merge_like_kyaml() {
        let file = serde_json::json!({"q": {"a": 1, "b": 2}, "r": [1, 2], "t": 5, "u": null});
        let inline = serde_json::json!({"q": {"a": null}, "r": null, "u": {"z": 1}, "v": null, "w": {"x": null}});
        assert_eq!(
            merge_values(inline.clone(), file.clone()).unwrap(),
            serde_json::json!({"q": {"b": 2}, "t": 5, "u": {"z": 1}, "w": {}})
        );
        assert_eq!(
            merge_values(file, inline).unwrap(),
            serde_json::json!({"q": {"a": 1, "b": 2}, "r": [1, 2], "t": 5, "v": null, "w": {"x": null}})
        );
        assert!(merge_values(serde_json::json!({"t": [1]}), serde_json::json!({"t": 5})).is_err());
    }
}
