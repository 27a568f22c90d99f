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
//!
//! This file holds the charts' settings and the inflation of one chart, step by step; running
//! helm is `runner`, merging `valuesInline` into the values file is `values`.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use super::RenderError;
use super::kustomize::whole_floats_as_integers;
use super::load::{Dialect, Repo, parse_objects_with};
use crate::error::chain;
use crate::object::{Object, Origin};
use runner::{pull_args, template_args};
use values::{ValuesMerge, merge_values, parse_values};

mod runner;
mod values;

pub use runner::{HELM_ENV, HelmError, HelmRunner};
pub use values::ValuesError;

/// Most directory entries checked in one chart (for symlinks that leave the repository).
const MAX_CHART_ENTRIES: usize = 20_000;

/// Deepest directory nesting checked in one chart.
const MAX_CHART_DEPTH: usize = 32;

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
                            self.error(format!("{field}.valuesInline"), problem.to_string())
                        })?
                    }
                };
                // kustomize writes the map through JSON: whole floats become integers.
                let mut merged = merged;
                whole_floats_as_integers(&mut merged);
                serde_json::to_vec(&merged).map_err(|error| {
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
            .map_err(|problem| self.error(&field, chain(&problem)))?;
        let args = template_args(chart, &chart_dir, &written_values, &additional);
        let output = runner
            .run(&args, &helm_home)
            .map_err(|problem| self.error(&field, chain(&problem)))?;
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
            .map_err(|problem| self.error(field, chain(&problem)))?;
        runner
            .run(&pull_args(chart, &pull_home), helm_home)
            .map_err(|problem| {
                self.error(
                    field,
                    format!(
                        "no chart at {} and pulling {:?} from {} failed; vendor the chart into {} \
                         (Flotilla renders offline): {}",
                        missing.display(),
                        chart.name,
                        chart.repo,
                        missing.display(),
                        chain(&problem)
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

#[cfg(test)]
mod tests;
