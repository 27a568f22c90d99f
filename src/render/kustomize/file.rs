//! The kustomization file: the fields Flotilla reads (each entry type lives with the step that
//! uses it), the fields it refuses and why, and how the file is read (field names without
//! regard to case, strict types, YAML 1.1 booleans in `valuesInline`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use super::generators::{GeneratorArgs, GeneratorOptions};
use super::patches::PatchEntry;
use super::transformers::{ImageEntry, LabelsEntry, ReplicaEntry};
use super::{replacements, vars};
use crate::render::RenderError;
use crate::render::load::{Dialect, Repo, parse_documents};

/// A `kustomization.yaml`, as far as Flotilla supports it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct Kustomization {
    #[allow(dead_code)]
    pub(super) api_version: Option<String>,
    pub(super) kind: Option<String>,
    #[allow(dead_code)]
    pub(super) metadata: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    pub(super) resources: Vec<String>,
    #[serde(default)]
    pub(super) components: Vec<String>,
    #[serde(default)]
    pub(super) configurations: Vec<String>,
    #[serde(default)]
    pub(super) generators: Vec<String>,
    #[serde(default)]
    pub(super) transformers: Vec<String>,
    #[serde(default)]
    pub(super) bases: Vec<String>,
    pub(super) namespace: Option<String>,
    pub(super) name_prefix: Option<String>,
    pub(super) name_suffix: Option<String>,
    #[serde(default)]
    pub(super) common_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) labels: Vec<LabelsEntry>,
    #[serde(default)]
    pub(super) common_annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) images: Vec<ImageEntry>,
    #[serde(default)]
    pub(super) replicas: Vec<ReplicaEntry>,
    #[serde(default)]
    pub(super) patches: Vec<PatchEntry>,
    #[serde(default)]
    pub(super) patches_strategic_merge: Vec<String>,
    #[serde(default, rename = "patchesJson6902")]
    pub(super) patches_json6902: Vec<PatchEntry>,
    #[serde(default)]
    pub(super) config_map_generator: Vec<GeneratorArgs>,
    #[serde(default)]
    pub(super) secret_generator: Vec<GeneratorArgs>,
    #[serde(default)]
    pub(super) generator_options: GeneratorOptions,
    #[serde(default)]
    pub(super) replacements: Vec<replacements::ReplacementEntry>,
    #[serde(default)]
    pub(super) vars: Vec<vars::VarEntry>,
    #[serde(default)]
    pub(super) helm_charts: Vec<crate::render::helm::HelmChart>,
    pub(super) helm_globals: Option<crate::render::helm::HelmGlobals>,
    sort_options: Option<SortOptions>,
    /// Only the built kustomization's counts (kustomize strips what a base asked for).
    #[serde(default)]
    pub(super) build_metadata: Vec<String>,
}

/// Kustomization fields kustomize has and Flotilla refuses rather than ignores, and why.
const UNSUPPORTED_FIELDS: &[(&str, &str)] = &[
    (
        "crds",
        "name references from CRD OpenAPI extensions are not read; use `configurations`",
    ),
    (
        "helmChartInflationGenerator",
        "deprecated by kustomize; use `helmCharts`",
    ),
    (
        "openapi",
        "custom OpenAPI schemas are not read; use `configurations` or `$patch` directives",
    ),
    (
        "validators",
        "validator plugins run code from the repository",
    ),
];

/// Every top-level field of a kustomization. kustomize reads field names without regard to
/// case (Go's JSON decoding), so `patchesJSON6902` is `patchesJson6902`.
const KUSTOMIZATION_FIELDS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "resources",
    "components",
    "configurations",
    "generators",
    "transformers",
    "bases",
    "namespace",
    "namePrefix",
    "nameSuffix",
    "commonLabels",
    "labels",
    "commonAnnotations",
    "images",
    "replicas",
    "patches",
    "patchesStrategicMerge",
    "patchesJson6902",
    "configMapGenerator",
    "secretGenerator",
    "generatorOptions",
    "replacements",
    "vars",
    "helmCharts",
    "helmGlobals",
    "sortOptions",
    "buildMetadata",
    "crds",
    "helmChartInflationGenerator",
    "openapi",
    "validators",
];

/// The text with top-level keys spelled in another case renamed to kustomize's spelling.
/// Top-level keys of a block mapping start at column 0, where nothing else can.
fn canonical_field_names(text: &str) -> std::borrow::Cow<'_, str> {
    let rename = |line: &str| -> Option<String> {
        let (key, rest) = line.split_once(':')?;
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        let canonical = KUSTOMIZATION_FIELDS
            .iter()
            .find(|f| f.eq_ignore_ascii_case(key) && **f != key)?;
        Some(format!("{canonical}:{rest}"))
    };
    if !text.lines().any(|line| rename(line).is_some()) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        match rename(line) {
            Some(renamed) => out.push_str(&renamed),
            None => out.push_str(line),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `sortOptions`: accepted and checked; Flotilla orders objects for apply (CRDs and
/// Namespaces first), so kustomize's output order has no effect here.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SortOptions {
    order: Option<String>,
    #[allow(dead_code)]
    legacy_sort_options: Option<LegacySortOptions>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LegacySortOptions {
    #[allow(dead_code)]
    #[serde(default)]
    order_first: Vec<String>,
    #[allow(dead_code)]
    #[serde(default)]
    order_last: Vec<String>,
}
pub(super) fn read_kustomization(repo: &Repo, path: &Path) -> Result<Kustomization, RenderError> {
    let text = repo.read_to_string(path)?;
    let text = canonical_field_names(&text);
    // Check the raw keys first so that unsupported features get a message of their own.
    let documents = parse_documents(&text, path)?;
    if let Some((Value::Object(map), _)) = documents.first() {
        if let Some((field, why)) = UNSUPPORTED_FIELDS
            .iter()
            .find(|(field, _)| map.contains_key(*field))
        {
            return Err(RenderError::Kustomization {
                path: path.to_path_buf(),
                field: field.to_string(),
                problem: format!("not supported: {why}"),
            });
        }
    } else if !documents.is_empty() {
        return Err(RenderError::Kustomization {
            path: path.to_path_buf(),
            field: "(document)".into(),
            problem: "expected a mapping".into(),
        });
    }
    let mut kustomization: Kustomization = typed_document(&text, path)?;
    // kustomize reads the file as YAML 1.1: an unquoted `enabled: yes` in valuesInline reaches
    // helm as a boolean.
    for (at, value) in crate::render::load::yaml11_booleans(&text) {
        if let [section, index, field, rest @ ..] = at.as_slice()
            && section == "helmCharts"
            && field == "valuesInline"
            && let Some(chart) = index
                .parse::<usize>()
                .ok()
                .and_then(|i| kustomization.helm_charts.get_mut(i))
        {
            chart.set_inline(rest, Value::Bool(value));
        }
    }
    let order = kustomization
        .sort_options
        .as_ref()
        .and_then(|o| o.order.as_deref());
    if let Some(order) = order.filter(|o| !matches!(*o, "legacy" | "fifo")) {
        return Err(RenderError::Kustomization {
            path: path.to_path_buf(),
            field: "sortOptions.order".into(),
            problem: format!("{order:?} is not one of legacy, fifo"),
        });
    }
    Ok(kustomization)
}

/// Deserialises a kustomize file (kustomization, configuration) strictly; an empty file is
/// the default. From the text, not a parsed tree: `newTag: 1.10` must stay "1.10".
pub(super) fn typed_document<T: serde::de::DeserializeOwned + Default>(
    text: &str,
    path: &Path,
) -> Result<T, RenderError> {
    serde_saphyr::from_str_with_options::<Option<T>>(
        text,
        crate::render::load::yaml_options(Dialect::Kustomize),
    )
    .map(Option::unwrap_or_default)
    .map_err(|error| RenderError::Yaml {
        path: path.to_path_buf(),
        line: error.location().map(|l| l.line() as usize).unwrap_or(0),
        message: error.to_string().lines().next().unwrap_or("").to_string(),
    })
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::kustomize::tests::build_tree;

    #[test]
    fn refused_fields_and_values_say_why() {
        for (kustomization, expected) in [
            (
                "sortOptions: {order: newest}\n",
                "sortOptions.order: \"newest\" is not one of legacy, fifo",
            ),
            (
                "buildMetadata: [originAnnotations, transformerAnnotations]\n",
                "buildMetadata[1]: not supported: transformerAnnotations",
            ),
            (
                "VALIDATORS: [v.yaml]\n",
                "validators: not supported: validator plugins run code",
            ),
        ] {
            let error = build_tree(&[("kustomization.yaml", kustomization)])
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{error}");
        }
    }
    #[test]
    fn field_names_are_read_without_regard_to_case_at_the_top_level_only() {
        assert_eq!(
            canonical_field_names("NamePrefix: a-\npatchesJSON6902: []\ndata:\n  Resources: x\n"),
            "namePrefix: a-\npatchesJson6902: []\ndata:\n  Resources: x\n"
        );
    }
}
