//! Field specs: where transformers write and which fields name other objects. kustomize's
//! built-in tables ([`FieldSpec`]), the `configurations` files that add to them
//! ([`TransformerConfig`]), and the walkers that visit the fields a spec path names.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::Level;
use super::file::typed_document;
use crate::object::Object;
use crate::render::RenderError;

/// A place where a transformer writes, in objects of a group and kind (kustomize's FieldSpec).
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct FieldSpecEntry {
    pub(super) path: String,
    pub(super) group: Option<String>,
    pub(super) version: Option<String>,
    pub(super) kind: Option<String>,
    #[serde(default)]
    pub(super) create: bool,
}

impl FieldSpecEntry {
    pub(super) fn applies(&self, group: &str, version: &str, kind: &str) -> bool {
        self.kind.as_deref().is_none_or(|k| k == kind)
            && self.group.as_deref().is_none_or(|g| g == group)
            && self.version.as_deref().is_none_or(|v| v == version)
    }
}

/// A `configurations` file: field specs added to kustomize's built-in ones. Sections that
/// would move name prefixes or suffixes are refused by name (see `read_config`).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct TransformerConfig {
    #[serde(default)]
    pub(super) common_labels: Vec<FieldSpecEntry>,
    #[serde(default)]
    pub(super) template_labels: Vec<FieldSpecEntry>,
    #[serde(default)]
    pub(super) common_annotations: Vec<FieldSpecEntry>,
    #[serde(default)]
    pub(super) name_reference: Vec<NameReference>,
    #[serde(default)]
    pub(super) var_reference: Vec<FieldSpecEntry>,
    #[serde(default)]
    pub(super) images: Vec<FieldSpecEntry>,
    #[serde(default)]
    pub(super) replicas: Vec<FieldSpecEntry>,
    #[serde(default)]
    pub(super) name_prefix: Vec<FieldSpecEntry>,
    #[serde(default)]
    pub(super) name_suffix: Vec<FieldSpecEntry>,
    #[serde(default)]
    pub(super) namespace: Vec<FieldSpecEntry>,
}

impl TransformerConfig {
    /// Adds `other`'s specs that are not already here (kustomize's MergeConfig).
    pub(super) fn merge(&mut self, other: TransformerConfig) {
        fn add<T: PartialEq>(to: &mut Vec<T>, from: Vec<T>) {
            for item in from {
                if !to.contains(&item) {
                    to.push(item);
                }
            }
        }
        add(&mut self.common_labels, other.common_labels);
        add(&mut self.template_labels, other.template_labels);
        add(&mut self.common_annotations, other.common_annotations);
        add(&mut self.name_reference, other.name_reference);
        add(&mut self.var_reference, other.var_reference);
        add(&mut self.images, other.images);
        add(&mut self.replicas, other.replicas);
        add(&mut self.name_prefix, other.name_prefix);
        add(&mut self.name_suffix, other.name_suffix);
        add(&mut self.namespace, other.namespace);
    }
}

/// Fields (`fieldSpecs`, in the referring objects) that name an object of `kind`.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct NameReference {
    pub(super) kind: String,
    pub(super) group: Option<String>,
    pub(super) version: Option<String>,
    #[serde(default)]
    pub(super) field_specs: Vec<FieldSpecEntry>,
}
impl Level<'_> {
    /// Reads the kustomization's `configurations` files into the configuration in force.
    pub(super) fn read_configurations(&mut self, files: &[String]) -> Result<(), RenderError> {
        for (index, reference) in files.iter().enumerate() {
            let config = self.read_config(reference, index)?;
            self.config.merge(config);
        }
        Ok(())
    }

    /// Reads a `configurations` file.
    fn read_config(&self, reference: &str, index: usize) -> Result<TransformerConfig, RenderError> {
        let field = format!("configurations[{index}]");
        let (path, text) = self.read_relative(reference)?;
        let config: TransformerConfig = typed_document(&text, &path)?;
        // Where prefixes and suffixes go is kustomize's own table here; a file that moves them
        // would be silently half-applied, so it is refused. Namespace fields are honoured.
        for (section, specs, default) in [
            ("namePrefix", &config.name_prefix, "metadata/name"),
            ("nameSuffix", &config.name_suffix, "metadata/name"),
        ] {
            if let Some(spec) = specs.iter().find(|s| s.path != default) {
                return Err(self.error(
                    field,
                    format!(
                        "{}: {section} field spec {:?}: only {default:?} is supported",
                        path.display(),
                        spec.path
                    ),
                ));
            }
        }
        Ok(config)
    }
}

/// A path in objects of some kinds where a transformer writes (kustomize's FieldSpec).
#[derive(Debug, Clone)]
pub(super) struct FieldSpec {
    pub(super) group: Option<&'static str>,
    pub(super) version: Option<&'static str>,
    pub(super) kinds: &'static [&'static str],
    pub(super) path: String,
    pub(super) create: bool,
}

impl FieldSpec {
    pub(super) fn all(path: &str, create: bool) -> Self {
        spec(&[], path, create)
    }

    /// Only in this API group (kustomize's table names groups: a `batch` Job, an `apps`
    /// StatefulSet, and leaves the pre-`apps` `extensions/v1beta1` Deployment's affinity alone).
    fn group(mut self, group: &'static str) -> Self {
        self.group = Some(group);
        self
    }

    /// Only in this API version (kustomize's Service selector is `v1`'s: a Knative
    /// `serving.knative.dev/v1` Service gets one, a `v1beta1` one does not).
    fn version(mut self, version: &'static str) -> Self {
        self.version = Some(version);
        self
    }

    pub(super) fn applies(&self, group: &str, version: &str, kind: &str) -> bool {
        self.group.is_none_or(|g| g == group)
            && self.version.is_none_or(|v| v == version)
            && (self.kinds.is_empty() || self.kinds.contains(&kind))
    }
}

fn spec(kinds: &'static [&'static str], path: &str, create: bool) -> FieldSpec {
    FieldSpec {
        group: None,
        version: None,
        kinds,
        path: path.into(),
        create,
    }
}

/// Pod template metadata as kustomize's tables give it for labels (with volume claim
/// templates) or annotations: kustomize's configuration, kept byte-exact with its kinds and
/// groups, not `crate::kinds::WORKLOADS`.
fn template_metadata_specs(field: &str, labels: bool) -> Vec<FieldSpec> {
    let template = format!("spec/template/metadata/{field}");
    let mut specs = vec![
        spec(&["ReplicationController"], &template, true).version("v1"),
        spec(&["Deployment", "ReplicaSet", "DaemonSet"], &template, true),
        // The StatefulSet's group is kustomize's for labels, not for annotations.
        if labels {
            spec(&["StatefulSet"], &template, true).group("apps")
        } else {
            spec(&["StatefulSet"], &template, true)
        },
        spec(&["Job"], &template, true).group("batch"),
        spec(
            &["CronJob"],
            &format!("spec/jobTemplate/metadata/{field}"),
            true,
        )
        .group("batch"),
        spec(
            &["CronJob"],
            &format!("spec/jobTemplate/spec/template/metadata/{field}"),
            true,
        )
        .group("batch"),
    ];
    if labels {
        // A list: labelled where it exists, never created (kustomize's `[]`).
        specs.push(
            spec(
                &["StatefulSet"],
                &format!("spec/volumeClaimTemplates[]/metadata/{field}"),
                true,
            )
            .group("apps"),
        );
    }
    specs
}

/// Where `labels` with `includeTemplates` (and `commonLabels`) write besides metadata.
pub(super) static LABEL_TEMPLATE_SPECS: std::sync::LazyLock<Vec<FieldSpec>> =
    std::sync::LazyLock::new(|| template_metadata_specs("labels", true));

/// Where `labels` with `includeSelectors` (and `commonLabels`) write selectors.
pub(super) static LABEL_SELECTOR_SPECS: std::sync::LazyLock<Vec<FieldSpec>> =
    std::sync::LazyLock::new(|| {
        let mut specs = vec![
            spec(&["Service"], "spec/selector", true).version("v1"),
            spec(&["ReplicationController"], "spec/selector", true).version("v1"),
            spec(
                &["Deployment", "ReplicaSet", "DaemonSet"],
                "spec/selector/matchLabels",
                true,
            ),
            spec(&["StatefulSet"], "spec/selector/matchLabels", true).group("apps"),
            spec(
                &["CronJob"],
                "spec/jobTemplate/spec/selector/matchLabels",
                false,
            )
            .group("batch"),
            spec(&["Job"], "spec/selector/matchLabels", false).group("batch"),
            spec(&["PodDisruptionBudget"], "spec/selector/matchLabels", false).group("policy"),
        ];
        for path in [
            "spec/podSelector/matchLabels",
            "spec/ingress/from/podSelector/matchLabels",
            "spec/egress/to/podSelector/matchLabels",
        ] {
            specs.push(spec(&["NetworkPolicy"], path, false).group("networking.k8s.io"));
        }
        // kustomize labels affinity and spread selectors of `apps` Deployments and StatefulSets.
        let affine: &'static [&'static str] = &["Deployment", "StatefulSet"];
        for affinity in ["podAffinity", "podAntiAffinity"] {
            specs.push(spec(
            affine,
            &format!("spec/template/spec/affinity/{affinity}/preferredDuringSchedulingIgnoredDuringExecution/podAffinityTerm/labelSelector/matchLabels"),
            false,
        ).group("apps"));
            specs.push(spec(
            affine,
            &format!("spec/template/spec/affinity/{affinity}/requiredDuringSchedulingIgnoredDuringExecution/labelSelector/matchLabels"),
            false,
        ).group("apps"));
        }
        specs.push(
            spec(
                affine,
                "spec/template/spec/topologySpreadConstraints/labelSelector/matchLabels",
                false,
            )
            .group("apps"),
        );
        specs
    });

/// Where `commonAnnotations` write besides metadata.
pub(super) static ANNOTATION_TEMPLATE_SPECS: std::sync::LazyLock<Vec<FieldSpec>> =
    std::sync::LazyLock::new(|| template_metadata_specs("annotations", false));

/// Writes `pairs` into the map at `path` (a `/`-separated path; lists on the way are entered
/// element by element). Missing maps are created only when `create` is set; a segment marked
/// `name[]` is a list and is never created.
pub(super) fn set_pairs(
    value: &mut Value,
    path: &str,
    create: bool,
    pairs: &BTreeMap<String, String>,
) {
    visit_path(value, path, create, &mut |slot| add_pairs(slot, pairs));
}

/// Adds `pairs` to a map (or a null that becomes one).
pub(super) fn add_pairs(slot: &mut Value, pairs: &BTreeMap<String, String>) {
    if slot.is_null() || slot.is_object() {
        let map = crate::object::ensure_map(slot);
        for (k, v) in pairs {
            map.insert(k.clone(), Value::String(v.clone()));
        }
    }
}

/// Calls `f` on every value the field specs that apply to `object` select.
pub(super) fn visit_field_specs(
    object: &mut Object,
    specs: &[FieldSpecEntry],
    f: &mut dyn FnMut(&mut Value),
) {
    let (group, version, kind) = object.group_version_kind();
    for spec in specs.iter().filter(|s| s.applies(&group, &version, &kind)) {
        visit_path(&mut object.value, &spec.path, spec.create, f);
    }
}

/// Calls `f` on every value at `path` (kustomize's field spec path: `/`-separated, lists on
/// the way entered element by element). Missing maps (and the last field, as null) are
/// created only when `create` is set; a segment marked `name[]` is a list, never created.
pub(super) fn visit_path(
    value: &mut Value,
    path: &str,
    create: bool,
    f: &mut dyn FnMut(&mut Value),
) {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    visit_segments(value, &segments, create, f);
}

fn visit_segments(value: &mut Value, path: &[&str], create: bool, f: &mut dyn FnMut(&mut Value)) {
    if let Value::Array(items) = value
        && !path.is_empty()
    {
        for item in items {
            visit_segments(item, path, create, f);
        }
        return;
    }
    let Some((first, rest)) = path.split_first() else {
        f(value);
        return;
    };
    if value.is_null() && create {
        *value = Value::Object(Map::new());
    }
    let Value::Object(map) = value else {
        return;
    };
    let (first, is_list) = match first.strip_suffix("[]") {
        Some(name) => (name, true),
        None => (*first, false),
    };
    match map.get_mut(first) {
        Some(child) if !child.is_null() => visit_segments(child, rest, create, f),
        _ if create && !is_list => {
            let child = map.entry(first.to_string()).or_insert(Value::Null);
            visit_segments(child, rest, create, f);
        }
        _ => {}
    }
}

/// JSON pointers of every value at a field spec path (as `visit_path`, never creating).
pub(super) fn pointers_at(value: &Value, path: &str) -> Vec<String> {
    fn walk(value: &Value, path: &[&str], at: String, out: &mut Vec<String>) {
        if let Value::Array(items) = value
            && !path.is_empty()
        {
            for (i, item) in items.iter().enumerate() {
                walk(item, path, format!("{at}/{i}"), out);
            }
            return;
        }
        let Some((first, rest)) = path.split_first() else {
            out.push(at);
            return;
        };
        let first = first.strip_suffix("[]").unwrap_or(first);
        if let Some(child) = value.get(first) {
            let escaped = first.replace('~', "~0").replace('/', "~1");
            walk(child, rest, format!("{at}/{escaped}"), out);
        }
    }
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let mut out = Vec::new();
    walk(value, &segments, String::new(), &mut out);
    out
}

/// Calls `f` on every container map in `containers` / `initContainers` lists anywhere.
pub(super) fn visit_containers(value: &mut Value, f: &mut dyn FnMut(&mut Map<String, Value>)) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if matches!(
                    key.as_str(),
                    // kustomize's image transformer leaves ephemeralContainers alone.
                    "containers" | "initContainers"
                ) && let Value::Array(items) = child
                {
                    for item in items.iter_mut() {
                        if let Value::Object(container) = item {
                            f(container);
                        }
                    }
                }
                visit_containers(child, f);
            }
        }
        Value::Array(items) => {
            for item in items {
                visit_containers(item, f);
            }
        }
        _ => {}
    }
}
#[cfg(test)]
mod tests {
    use crate::render::kustomize::tests::build_tree;

    #[test]
    fn configurations_that_move_names_or_have_unknown_fields_are_refused() {
        let error = build_tree(&[
            ("kustomization.yaml", "configurations: [c.yaml]\n"),
            ("c.yaml", "namePrefix:\n- path: spec/alias\n  kind: MyApp\n"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("configurations[0]: c.yaml: namePrefix field spec \"spec/alias\""),
            "{error}"
        );
        let error = build_tree(&[
            ("kustomization.yaml", "configurations: [c.yaml]\n"),
            ("c.yaml", "commonLabel:\n- path: spec/x\n"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("c.yaml") && error.contains("commonLabel"),
            "{error}"
        );
    }
}
