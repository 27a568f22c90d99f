//! kustomize v5.5.0's build: resources, bases and components, generators (and Helm charts,
//! `helm.rs`), patches, the field transformers, `configurations`, `replacements`, `vars` and
//! the built-in plugin configs (`plugins.rs`), with kustomize's order and name references.
//! What Flotilla does not build (remote bases, external plugins, `crds`, `openapi`, ...) is
//! refused by name with the reason, never silently ignored.
//!
//! A build runs like kustomize's `accumulateTarget`: each kustomization accumulates its
//! resources (building its bases first), reads its `configurations`, runs its generators,
//! its components (on everything gathered so far), then its transformers in kustomize's fixed
//! order. Only the top-level build adds content hashes to generated names, rewrites the
//! references to renamed objects (every level's renames are known by then) and resolves vars.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::load::{Dialect, Repo, parse_documents, parse_documents_with};
use super::merge::{schemaless_merge, strategic_merge};
use super::{RenderError, kustomization_file};
use crate::image::kustomize_split;
use crate::labels::{matches_all, parse_label_selector};
use crate::object::{
    Object, Origin, is_builtin_group, map_at_path, pod_references, pod_spec_pointer,
    split_api_version,
};

// Child modules reach `Level`, `Resource` and `Target` without widening them.
mod plugins;
mod replacements;
mod vars;

/// Builds the kustomization in `dir` (root-relative) into its objects.
pub fn build(repo: &Repo, dir: &Path) -> Result<Vec<Object>, RenderError> {
    let mut declared_vars = vars::DeclaredVars::default();
    let Accumulated {
        mut resources,
        config,
    } = accumulate(
        repo,
        dir,
        &mut Vec::new(),
        &mut declared_vars,
        Role::Kustomization,
        Accumulated::default(),
    )?;
    add_name_hashes(&mut resources)?;
    fix_name_references(&mut resources, &config.name_reference);
    let mut var_references = vars::BUILTIN_VAR_REFERENCES.clone();
    var_references.extend(config.var_reference);
    declared_vars.resolve(&mut resources, &var_references)?;
    for resource in &mut resources {
        whole_floats_as_integers(&mut resource.object.value);
        // kustomize writes no empty (or null) `metadata.annotations`; empty labels stay.
        let metadata = resource.object.metadata_mut();
        if metadata
            .get("annotations")
            .is_some_and(|a| a.is_null() || a.as_object().is_some_and(Map::is_empty))
        {
            metadata.remove("annotations");
        }
        // kustomize rewrites every object's annotations as strings when it strips its build
        // annotations (Resource.RemoveBuildAnnotations), so an unquoted `scrape: true` or
        // `port: 8080` comes out quoted. It keeps the YAML text, which the loader already kept
        // for files (`load::kustomize_scalars`); what is left (values set by transformers)
        // gives the same text for booleans, plain integers and decimals.
        if let Some(annotations) = metadata
            .get_mut("annotations")
            .and_then(Value::as_object_mut)
        {
            for value in annotations.values_mut() {
                let text = match &*value {
                    Value::String(_) => continue,
                    Value::Bool(b) => b.to_string(),
                    Value::Number(n) => n.to_string(),
                    Value::Null | Value::Array(_) | Value::Object(_) => String::new(),
                };
                *value = Value::String(text);
            }
        }
    }
    if let Some(file) = kustomization_file(repo, dir)? {
        let root = read_kustomization(repo, &file)?;
        add_build_metadata(&mut resources, dir, &file, &root.build_metadata)?;
    }
    Ok(resources.into_iter().map(|r| r.object).collect())
}

/// The built kustomization's `buildMetadata`: `originAnnotations` (where each object came
/// from, relative to the built directory) and `managedByLabel`.
fn add_build_metadata(
    resources: &mut [Resource],
    dir: &Path,
    file: &Path,
    options: &[String],
) -> Result<(), RenderError> {
    let (mut origins, mut managed_by) = (false, false);
    for (index, option) in options.iter().enumerate() {
        match option.as_str() {
            "originAnnotations" => origins = true,
            "managedByLabel" => managed_by = true,
            "transformerAnnotations" => {
                return Err(RenderError::Kustomization {
                    path: file.to_path_buf(),
                    field: format!("buildMetadata[{index}]"),
                    problem: "not supported: transformerAnnotations record kustomize's \
                              transformer configurations"
                        .into(),
                });
            }
            // kustomize ignores an option it does not know.
            _ => {}
        }
    }
    for resource in resources {
        if origins {
            let path = relative_path(dir, &resource.object.origin.path);
            let origin = match resource.generator {
                Some(kind) => format!(
                    "configuredIn: {}\nconfiguredBy:\n  apiVersion: builtin\n  kind: {kind}\n",
                    path.display()
                ),
                None => format!("path: {}\n", path.display()),
            };
            map_at_path(&mut resource.object.value, &["metadata", "annotations"])
                .insert("config.kubernetes.io/origin".into(), Value::String(origin));
        }
        if managed_by {
            map_at_path(&mut resource.object.value, &["metadata", "labels"]).insert(
                "app.kubernetes.io/managed-by".into(),
                Value::String("kustomize-v5.5.0".into()),
            );
        }
    }
    Ok(())
}

/// `target` as a path from `base` (both root-relative): `../base/app.yaml`.
fn relative_path(base: &Path, target: &Path) -> PathBuf {
    let base: Vec<_> = base.components().collect();
    let target: Vec<_> = target.components().collect();
    let common = base.iter().zip(&target).take_while(|(a, b)| a == b).count();
    let mut path = PathBuf::new();
    for _ in common..base.len() {
        path.push("..");
    }
    for component in &target[common..] {
        path.push(component);
    }
    path
}

/// The kinds kustomize takes as cluster-scoped, by apiVersion: kyaml's table from the
/// Kubernetes 1.21 schema (openapi.precomputedIsNamespaceScoped). kustomize has no other source:
/// a kind it does not list is namespaced, whatever the cluster or a CRD in the build says - a
/// ValidatingAdmissionPolicy, a `flowcontrol/v1` FlowSchema, a cluster-scoped CRD's objects all
/// get the `namespace:`.
const KUSTOMIZE_CLUSTER_SCOPED: &[(&str, &str)] = &[
    (
        "admissionregistration.k8s.io/v1",
        "MutatingWebhookConfiguration",
    ),
    (
        "admissionregistration.k8s.io/v1",
        "ValidatingWebhookConfiguration",
    ),
    (
        "admissionregistration.k8s.io/v1beta1",
        "MutatingWebhookConfiguration",
    ),
    (
        "admissionregistration.k8s.io/v1beta1",
        "ValidatingWebhookConfiguration",
    ),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
    ("apiextensions.k8s.io/v1beta1", "CustomResourceDefinition"),
    ("apiregistration.k8s.io/v1", "APIService"),
    ("apiregistration.k8s.io/v1beta1", "APIService"),
    ("certificates.k8s.io/v1", "CertificateSigningRequest"),
    ("certificates.k8s.io/v1beta1", "CertificateSigningRequest"),
    ("flowcontrol.apiserver.k8s.io/v1beta1", "FlowSchema"),
    (
        "flowcontrol.apiserver.k8s.io/v1beta1",
        "PriorityLevelConfiguration",
    ),
    ("networking.k8s.io/v1", "IngressClass"),
    ("networking.k8s.io/v1beta1", "IngressClass"),
    ("node.k8s.io/v1", "RuntimeClass"),
    ("node.k8s.io/v1beta1", "RuntimeClass"),
    ("policy/v1beta1", "PodSecurityPolicy"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
    ("rbac.authorization.k8s.io/v1beta1", "ClusterRole"),
    ("rbac.authorization.k8s.io/v1beta1", "ClusterRoleBinding"),
    ("scheduling.k8s.io/v1", "PriorityClass"),
    ("scheduling.k8s.io/v1beta1", "PriorityClass"),
    ("storage.k8s.io/v1", "CSIDriver"),
    ("storage.k8s.io/v1", "CSINode"),
    ("storage.k8s.io/v1", "StorageClass"),
    ("storage.k8s.io/v1", "VolumeAttachment"),
    ("storage.k8s.io/v1beta1", "CSIDriver"),
    ("storage.k8s.io/v1beta1", "CSINode"),
    ("storage.k8s.io/v1beta1", "StorageClass"),
    ("storage.k8s.io/v1beta1", "VolumeAttachment"),
    ("v1", "ComponentStatus"),
    ("v1", "Namespace"),
    ("v1", "Node"),
    ("v1", "NodeProxyOptions"),
    ("v1", "PersistentVolume"),
];

/// Whether kustomize takes objects of this apiVersion and kind as cluster-scoped.
pub(super) fn kustomize_cluster_scoped(api_version: &str, kind: &str) -> bool {
    KUSTOMIZE_CLUSTER_SCOPED.contains(&(api_version, kind))
}

/// [`kustomize_cluster_scoped`] for a kind named without its apiVersion (a name reference's).
fn kustomize_cluster_scoped_kind(kind: &str) -> bool {
    KUSTOMIZE_CLUSTER_SCOPED.iter().any(|(_, k)| *k == kind)
}

/// kustomize's objects pass through JSON (`map[string]interface{}`), where a number is a
/// float64 written without a fraction when it has none: `1.0` and `1e3` come out as `1` and
/// `1000`.
fn whole_floats_as_integers(value: &mut Value) {
    match value {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
                && f.abs() < 9.0e15
            {
                // Exact: |f| < 2^53, and a whole number.
                *value = json!(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_floats_as_integers),
        Value::Object(map) => map.values_mut().for_each(whole_floats_as_integers),
        _ => {}
    }
}

/// An object during a build, with the names it had before (kustomize's "previous ids").
#[derive(Debug, Clone)]
struct Resource {
    object: Object,
    /// Earlier (name, namespace) pairs, oldest first.
    history: Vec<(String, String)>,
    /// The prefix/suffix pairs applied, innermost first; tells apart copies of one base.
    affixes: Vec<(String, String)>,
    /// Generated and still to get its content-hash suffix.
    needs_hash: bool,
    /// The vars whose objref names this object.
    var_names: Vec<String>,
    /// The builtin generator that made it (`ConfigMapGenerator`, ...), for origin annotations.
    generator: Option<&'static str>,
}

impl Resource {
    fn new(object: Object) -> Self {
        Resource {
            object,
            history: Vec::new(),
            affixes: Vec::new(),
            needs_hash: false,
            var_names: Vec::new(),
            generator: None,
        }
    }

    fn remember_identity(&mut self) {
        let current = (
            self.object.name().to_string(),
            self.object.namespace().to_string(),
        );
        if self.history.last() != Some(&current) {
            self.history.push(current);
        }
    }

    fn rename(&mut self, name: &str) {
        self.remember_identity();
        self.object.set_name(name);
    }

    fn set_namespace(&mut self, namespace: &str) {
        self.remember_identity();
        self.object.set_namespace(namespace);
    }

    /// Every (name, namespace) the object has been known by, current last.
    fn identities(&self) -> impl Iterator<Item = (&str, &str)> {
        self.history
            .iter()
            .map(|(n, ns)| (n.as_str(), ns.as_str()))
            .chain(std::iter::once((
                self.object.name(),
                self.object.namespace(),
            )))
    }

    fn known_as(&self, name: &str) -> bool {
        self.identities().any(|(n, _)| n == name)
    }

    fn known_in_namespace(&self, namespace: &str) -> bool {
        self.identities()
            .any(|(_, ns)| same_namespace(ns, namespace))
    }
}

/// Kustomize treats a missing namespace as `default`.
fn same_namespace(a: &str, b: &str) -> bool {
    let norm = |ns: &str| if ns.is_empty() { "default" } else { ns }.to_string();
    norm(a) == norm(b)
}

// ----- the kustomization file -----

/// A `kustomization.yaml`, as far as Flotilla supports it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Kustomization {
    #[allow(dead_code)]
    api_version: Option<String>,
    kind: Option<String>,
    #[allow(dead_code)]
    metadata: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    components: Vec<String>,
    #[serde(default)]
    configurations: Vec<String>,
    #[serde(default)]
    generators: Vec<String>,
    #[serde(default)]
    transformers: Vec<String>,
    #[serde(default)]
    bases: Vec<String>,
    namespace: Option<String>,
    name_prefix: Option<String>,
    name_suffix: Option<String>,
    #[serde(default)]
    common_labels: BTreeMap<String, String>,
    #[serde(default)]
    labels: Vec<LabelsEntry>,
    #[serde(default)]
    common_annotations: BTreeMap<String, String>,
    #[serde(default)]
    images: Vec<ImageEntry>,
    #[serde(default)]
    replicas: Vec<ReplicaEntry>,
    #[serde(default)]
    patches: Vec<PatchEntry>,
    #[serde(default)]
    patches_strategic_merge: Vec<String>,
    #[serde(default, rename = "patchesJson6902")]
    patches_json6902: Vec<PatchEntry>,
    #[serde(default)]
    config_map_generator: Vec<GeneratorArgs>,
    #[serde(default)]
    secret_generator: Vec<GeneratorArgs>,
    #[serde(default)]
    generator_options: GeneratorOptions,
    #[serde(default)]
    replacements: Vec<replacements::ReplacementEntry>,
    #[serde(default)]
    vars: Vec<vars::VarEntry>,
    #[serde(default)]
    helm_charts: Vec<super::helm::HelmChart>,
    helm_globals: Option<super::helm::HelmGlobals>,
    sort_options: Option<SortOptions>,
    /// Only the built kustomization's counts (kustomize strips what a base asked for).
    #[serde(default)]
    build_metadata: Vec<String>,
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

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LabelsEntry {
    #[serde(default)]
    pairs: BTreeMap<String, String>,
    #[serde(default)]
    include_selectors: bool,
    #[serde(default)]
    include_templates: bool,
    #[serde(default)]
    fields: Vec<FieldSpecEntry>,
}

/// A place where a transformer writes, in objects of a group and kind (kustomize's FieldSpec).
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FieldSpecEntry {
    path: String,
    group: Option<String>,
    version: Option<String>,
    kind: Option<String>,
    #[serde(default)]
    create: bool,
}

impl FieldSpecEntry {
    fn applies(&self, group: &str, version: &str, kind: &str) -> bool {
        self.kind.as_deref().is_none_or(|k| k == kind)
            && self.group.as_deref().is_none_or(|g| g == group)
            && self.version.as_deref().is_none_or(|v| v == version)
    }
}

/// A `configurations` file: field specs added to kustomize's built-in ones. Sections that
/// would move name prefixes or suffixes are refused by name (see `read_config`).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TransformerConfig {
    #[serde(default)]
    common_labels: Vec<FieldSpecEntry>,
    #[serde(default)]
    template_labels: Vec<FieldSpecEntry>,
    #[serde(default)]
    common_annotations: Vec<FieldSpecEntry>,
    #[serde(default)]
    name_reference: Vec<NameReference>,
    #[serde(default)]
    var_reference: Vec<FieldSpecEntry>,
    #[serde(default)]
    images: Vec<FieldSpecEntry>,
    #[serde(default)]
    replicas: Vec<FieldSpecEntry>,
    #[serde(default)]
    name_prefix: Vec<FieldSpecEntry>,
    #[serde(default)]
    name_suffix: Vec<FieldSpecEntry>,
    #[serde(default)]
    namespace: Vec<FieldSpecEntry>,
}

impl TransformerConfig {
    /// Adds `other`'s specs that are not already here (kustomize's MergeConfig).
    fn merge(&mut self, other: TransformerConfig) {
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
struct NameReference {
    kind: String,
    group: Option<String>,
    version: Option<String>,
    #[serde(default)]
    field_specs: Vec<FieldSpecEntry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ImageEntry {
    name: String,
    new_name: Option<String>,
    new_tag: Option<String>,
    digest: Option<String>,
    /// Appended to the image's tag when neither `newTag` nor `digest` is given.
    tag_suffix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ReplicaEntry {
    name: String,
    count: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PatchEntry {
    path: Option<String>,
    patch: Option<String>,
    target: Option<Target>,
    options: Option<BTreeMap<String, bool>>,
}

/// Which objects a patch applies to; names and namespaces are anchored regular expressions.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Target {
    group: Option<String>,
    version: Option<String>,
    kind: Option<String>,
    name: Option<String>,
    namespace: Option<String>,
    label_selector: Option<String>,
    annotation_selector: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct GeneratorArgs {
    name: String,
    namespace: Option<String>,
    behavior: Option<String>,
    #[serde(default)]
    literals: Vec<String>,
    #[serde(default)]
    files: Vec<String>,
    #[serde(default)]
    envs: Vec<String>,
    env: Option<String>,
    #[serde(rename = "type")]
    secret_type: Option<String>,
    #[serde(default)]
    options: GeneratorOptions,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct GeneratorOptions {
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    disable_name_suffix_hash: Option<bool>,
    immutable: Option<bool>,
}

fn read_kustomization(repo: &Repo, path: &Path) -> Result<Kustomization, RenderError> {
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
    for (at, value) in super::load::yaml11_booleans(&text) {
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
fn typed_document<T: serde::de::DeserializeOwned + Default>(
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

// ----- accumulation -----

/// What a kustomization is to the one that names it: a base (in `resources`) or a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The kustomization built, or a base: `kind: Kustomization` (or none).
    Kustomization,
    /// Named in `components`: `kind: Component`, run on the resources accumulated so far.
    Component,
}

/// What a build has gathered: its resources, and the transformer configurations
/// (`configurations`) of it and everything below it, which kustomize passes upwards.
#[derive(Debug, Default)]
struct Accumulated {
    resources: Vec<Resource>,
    config: TransformerConfig,
}

/// Builds one kustomization. A base starts from nothing; a component (`Role::Component`)
/// starts from `accumulated`, what the kustomization that names it has gathered, and its
/// generators and transformers apply to all of it, as kustomize's do.
fn accumulate(
    repo: &Repo,
    dir: &Path,
    stack: &mut Vec<PathBuf>,
    declared_vars: &mut vars::DeclaredVars,
    role: Role,
    accumulated: Accumulated,
) -> Result<Accumulated, RenderError> {
    let Some(file) = kustomization_file(repo, dir)? else {
        return Err(RenderError::Kustomization {
            path: dir.to_path_buf(),
            field: "resources".into(),
            problem: "directory has no kustomization.yaml".into(),
        });
    };
    // kustomize refuses a directory that is, or contains, one being built ("cycle detected:
    // candidate root contains visited root"), e.g. an overlay under its base naming `../../`.
    if let Some(visited) = stack.iter().find(|visited| visited.starts_with(dir)) {
        return Err(RenderError::Kustomization {
            path: file,
            field: "resources".into(),
            problem: format!(
                "cycle: this directory contains {}, which is being built and names it",
                visited.display()
            ),
        });
    }
    let limit = repo.limits().max_depth;
    if stack.len() >= limit {
        return Err(RenderError::Limit {
            path: file,
            what: format!("more than {limit} kustomizations nested (resources, components)"),
            flag: "--max-depth",
        });
    }
    stack.push(dir.to_path_buf());
    let kustomization = read_kustomization(repo, &file)?;
    let kind = kustomization.kind.as_deref().unwrap_or("Kustomization");
    let expected = match role {
        Role::Kustomization => "Kustomization",
        Role::Component => "Component",
    };
    if kind != expected {
        let problem = match role {
            Role::Kustomization => format!(
                "kind {kind:?}: a Component is named in `components`, not built or used as a base"
            ),
            Role::Component => {
                format!("kind {kind:?}: only a `kind: Component` can be named in `components`")
            }
        };
        return Err(RenderError::Kustomization {
            path: file,
            field: "kind".into(),
            problem,
        });
    }
    // kustomize's EnforceFields: each kind has one apiVersion (or none).
    let required = match kind {
        "Component" => "kustomize.config.k8s.io/v1alpha1",
        _ => "kustomize.config.k8s.io/v1beta1",
    };
    if let Some(api_version) = kustomization.api_version.as_deref()
        && !api_version.is_empty()
        && api_version != required
    {
        return Err(RenderError::Kustomization {
            path: file,
            field: "apiVersion".into(),
            problem: format!("{api_version:?}: a {kind} must have apiVersion {required}"),
        });
    }
    let mut build = Level {
        repo,
        dir,
        file: &file,
        resources: accumulated.resources,
        config: accumulated.config,
    };

    // Resources and bases, each base fully built first.
    for reference in kustomization.resources.iter().chain(&kustomization.bases) {
        let path = repo.resolve(dir, reference, &file)?;
        if repo.absolute(&path).is_dir() {
            let base = accumulate(
                repo,
                &path,
                stack,
                declared_vars,
                Role::Kustomization,
                Accumulated::default(),
            )?;
            build.append(base.resources)?;
            build.config.merge(base.config);
        } else {
            // kustomize reads resources with kyaml: YAML 1.2 booleans, apiVersion optional.
            let objects = repo.load_objects_with(&path, Dialect::Kustomize)?;
            build.append(objects.into_iter().map(Resource::new).collect())?;
        }
    }
    for (index, reference) in kustomization.configurations.iter().enumerate() {
        let config = build.read_config(reference, index)?;
        build.config.merge(config);
    }

    // Generators, components, then the transformers in kustomize's order.
    let options = &kustomization.generator_options;
    build.generate(
        &kustomization.config_map_generator,
        "ConfigMap",
        options,
        "configMapGenerator",
    )?;
    build.generate(
        &kustomization.secret_generator,
        "Secret",
        options,
        "secretGenerator",
    )?;
    let inflated = super::helm::inflate_charts(
        repo,
        dir,
        &file,
        &kustomization.helm_charts,
        kustomization.helm_globals.as_ref(),
    )?;
    build.append(
        inflated
            .into_iter()
            .map(|object| Resource {
                generator: Some("HelmChartInflationGenerator"),
                ..Resource::new(object)
            })
            .collect(),
    )?;
    build.run_plugin_configs(&kustomization.generators, "generators")?;
    // Components after the generators, before the transformers (kustomize's accumulateTarget):
    // each runs on everything gathered so far, generated objects included.
    for reference in &kustomization.components {
        let path = repo.resolve(dir, reference, &file)?;
        let so_far = Accumulated {
            resources: std::mem::take(&mut build.resources),
            config: std::mem::take(&mut build.config),
        };
        let with_component =
            accumulate(repo, &path, stack, declared_vars, Role::Component, so_far)?;
        build.resources = with_component.resources;
        build.config = with_component.config;
    }
    stack.pop();
    build.patch_strategic_merge(&kustomization.patches_strategic_merge)?;
    build.patch(&kustomization.patches, "patches")?;
    if let Some(namespace) = &kustomization.namespace {
        build.set_namespace(namespace);
    }
    build.add_affixes(
        kustomization.name_prefix.as_deref().unwrap_or(""),
        kustomization.name_suffix.as_deref().unwrap_or(""),
    );
    build.add_labels(&kustomization);
    build.add_annotations(&kustomization.common_annotations);
    build.patch(&kustomization.patches_json6902, "patchesJson6902")?;
    build.set_replicas(&kustomization.replicas);
    build.set_images(&kustomization.images);
    build.replace(&kustomization.replacements)?;
    build.run_plugin_configs(&kustomization.transformers, "transformers")?;
    build.declare_vars(&kustomization.vars, declared_vars)?;
    Ok(Accumulated {
        resources: build.resources,
        config: build.config,
    })
}

/// One kustomization being built.
struct Level<'a> {
    repo: &'a Repo,
    dir: &'a Path,
    file: &'a Path,
    resources: Vec<Resource>,
    /// The transformer configurations in force: this level's and its bases'.
    config: TransformerConfig,
}

impl Level<'_> {
    fn error(&self, field: impl Into<String>, problem: impl Into<String>) -> RenderError {
        RenderError::Kustomization {
            path: self.file.to_path_buf(),
            field: field.into(),
            problem: problem.into(),
        }
    }

    fn append(&mut self, incoming: Vec<Resource>) -> Result<(), RenderError> {
        let mut known: BTreeMap<crate::object::ObjectRef, usize> = self
            .resources
            .iter()
            .enumerate()
            .map(|(i, r)| (r.object.object_ref(), i))
            .collect();
        for resource in incoming {
            let id = resource.object.object_ref();
            if let Some(&existing) = known.get(&id) {
                return Err(RenderError::Duplicate {
                    object: id,
                    first: self.resources[existing].object.origin.clone(),
                    second: resource.object.origin.clone(),
                });
            }
            known.insert(id, self.resources.len());
            self.resources.push(resource);
        }
        Ok(())
    }

    /// Reads a file named in the kustomization, relative to its directory.
    fn read_relative(&self, reference: &str) -> Result<(PathBuf, String), RenderError> {
        let path = self.repo.resolve(self.dir, reference, self.file)?;
        let text = self.repo.read_to_string(&path)?;
        Ok((path, text))
    }

    // ----- generators -----

    /// Runs generators of one kind (`ConfigMap`, `Secret`); `field` names the list for errors.
    fn generate(
        &mut self,
        list: &[GeneratorArgs],
        kind: &str,
        global_options: &GeneratorOptions,
        field: &str,
    ) -> Result<(), RenderError> {
        // Objects of this kind by every name they have had (a scan per generator was quadratic).
        let mut by_name: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, resource) in self.resources.iter().enumerate() {
            if resource.object.kind() == kind {
                for (name, _) in resource.identities() {
                    by_name.entry(name.to_string()).or_default().push(i);
                }
            }
        }
        for (index, args) in list.iter().enumerate() {
            let field = format!("{field}[{index}]");
            let data = self.generator_data(args, kind == "Secret", &field)?;
            let options = merged_options(global_options, &args.options);
            let namespace = args.namespace.clone().unwrap_or_default();
            // Like kustomize, any other behavior (`add`, none) means create.
            let behavior = args
                .behavior
                .as_deref()
                .filter(|b| matches!(*b, "merge" | "replace"))
                .unwrap_or("create");
            let existing = by_name.get(&args.name).and_then(|candidates| {
                candidates
                    .iter()
                    .copied()
                    .find(|&i| self.resources[i].known_in_namespace(&namespace))
            });
            match (behavior, existing) {
                ("create", None) => {
                    // Generated objects count as loaded ones: a kustomization of generators
                    // is only bounded by its file size otherwise.
                    self.repo.count_objects(1, self.file)?;
                    let object = generated_object(kind, args, &namespace, data, &options);
                    let mut resource = Resource::new(Object::new(
                        object,
                        Origin::generated(self.file.to_path_buf()),
                    ));
                    resource.needs_hash = !options.disable_name_suffix_hash.unwrap_or(false);
                    resource.generator = Some(if kind == "Secret" {
                        "SecretGenerator"
                    } else {
                        "ConfigMapGenerator"
                    });
                    by_name
                        .entry(args.name.clone())
                        .or_default()
                        .push(self.resources.len());
                    self.resources.push(resource);
                }
                ("create", Some(_)) => {
                    return Err(self.error(
                        field,
                        format!(
                            "{kind} {:?} already exists; use behavior merge or replace",
                            args.name
                        ),
                    ));
                }
                (_, Some(i)) => {
                    let resource = &mut self.resources[i];
                    let target = &mut resource.object.value;
                    let replace = behavior == "replace";
                    for key in ["data", "binaryData"] {
                        let incoming = data.get(key).and_then(Value::as_object);
                        let entry = target
                            .as_object_mut()
                            .map(|m| m.entry(key.to_string()).or_insert_with(|| json!({})));
                        if let (Some(entry), Some(incoming)) = (entry, incoming) {
                            let map = crate::object::ensure_map(entry);
                            if replace {
                                map.clear();
                            }
                            map.extend(incoming.clone());
                        }
                        if target
                            .get(key)
                            .and_then(Value::as_object)
                            .is_some_and(Map::is_empty)
                            && let Some(m) = target.as_object_mut()
                        {
                            m.remove(key);
                        }
                    }
                    let metadata = resource.object.metadata_mut();
                    for (key, pairs) in [
                        ("labels", &options.labels),
                        ("annotations", &options.annotations),
                    ] {
                        if !pairs.is_empty() {
                            let map = crate::object::ensure_map(
                                metadata.entry(key).or_insert_with(|| json!({})),
                            );
                            for (k, v) in pairs {
                                map.insert(k.clone(), Value::String(v.clone()));
                            }
                        }
                    }
                    if let Some(disable) = args.options.disable_name_suffix_hash {
                        resource.needs_hash = !disable;
                    }
                }
                (_, None) => {
                    return Err(self.error(
                        field,
                        format!(
                            "behavior {behavior}: no {kind} named {:?} to {behavior}",
                            args.name
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The `data` / `binaryData` of a generator, from literals, files and env files.
    fn generator_data(
        &self,
        args: &GeneratorArgs,
        secret: bool,
        field: &str,
    ) -> Result<Value, RenderError> {
        let mut pairs: Vec<(String, Vec<u8>)> = Vec::new();
        for env in args.envs.iter().chain(args.env.as_ref()) {
            let (_, text) = self.read_relative(env)?;
            // kustomize's env file: a BOM on the first line and leading space trimmed, the rest
            // kept (a `\r` ending too); `KEY` alone is empty. Its key check is a no-op (the
            // API server judges keys), so `KEY = v` makes the key "KEY " and `=v` is skipped.
            for (number, line) in text.lines().enumerate() {
                let line = if number == 0 {
                    line.trim_start_matches('\u{feff}')
                } else {
                    line
                };
                let line = line.trim_start();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let (key, value) = line.split_once('=').unwrap_or((line, ""));
                if key.is_empty() {
                    continue;
                }
                pairs.push((key.to_string(), value.as_bytes().to_vec()));
            }
        }
        for literal in &args.literals {
            let Some((key, value)) = literal.split_once('=').filter(|(key, _)| !key.is_empty())
            else {
                return Err(self.error(
                    format!("{field}.literals"),
                    format!("{literal:?} is not KEY=VALUE"),
                ));
            };
            pairs.push((key.to_string(), strip_quotes(value).as_bytes().to_vec()));
        }
        for file in &args.files {
            let (key, reference) = match file.split_once('=') {
                Some((key, path)) => (key.to_string(), path),
                None => (
                    Path::new(file)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    file.as_str(),
                ),
            };
            let path = self.repo.resolve(self.dir, reference, self.file)?;
            let bytes = self.repo.read_bytes(&path)?;
            pairs.push((key, bytes));
        }
        let mut data = Map::new();
        let mut binary = Map::new();
        for (key, bytes) in pairs {
            if data.contains_key(&key) || binary.contains_key(&key) {
                return Err(self.error(field, format!("key {key:?} is set twice")));
            }
            let base64 = || Value::String(wrapped_base64(&bytes));
            match (secret, String::from_utf8(bytes.clone())) {
                (true, _) => {
                    data.insert(key, base64());
                }
                (false, Ok(text)) => {
                    data.insert(key, Value::String(text));
                }
                (false, Err(_)) => {
                    binary.insert(key, base64());
                }
            }
        }
        let mut out = Map::new();
        // A generated Secret always has `data`, even empty; a ConfigMap only when it has some.
        if !data.is_empty() || secret {
            out.insert("data".into(), Value::Object(data));
        }
        if !binary.is_empty() {
            out.insert("binaryData".into(), Value::Object(binary));
        }
        Ok(Value::Object(out))
    }

    // ----- patches -----

    fn patch_strategic_merge(&mut self, patches: &[String]) -> Result<(), RenderError> {
        for (index, entry) in patches.iter().enumerate() {
            let field = format!("patchesStrategicMerge[{index}]");
            // An entry is either a file name or an inline patch.
            let text = if entry.contains('\n') || entry.trim_start().starts_with('{') {
                entry.clone()
            } else {
                self.read_relative(entry)?.1
            };
            for (patch, _) in parse_documents_with(&text, self.file, Dialect::Kustomize)? {
                self.apply_merge_patch(&patch, None, &field, &BTreeMap::new())?;
            }
        }
        Ok(())
    }

    fn patch(&mut self, entries: &[PatchEntry], list: &str) -> Result<(), RenderError> {
        for (index, entry) in entries.iter().enumerate() {
            let field = format!("{list}[{index}]");
            let text = match (&entry.path, &entry.patch) {
                (Some(path), None) => self.read_relative(path)?.1,
                (None, Some(patch)) => patch.clone(),
                _ => return Err(self.error(field, "needs exactly one of path and patch")),
            };
            let documents = parse_documents_with(&text, self.file, Dialect::Kustomize)?;
            // A list is a JSON 6902 patch; maps are strategic merge patches.
            if let [(Value::Array(ops), _)] = documents.as_slice() {
                let Some(target) = &entry.target else {
                    return Err(self.error(field, "a JSON 6902 patch needs a target"));
                };
                let operations: json_patch::Patch =
                    serde_json::from_value(Value::Array(ops.clone())).map_err(|e| {
                        self.error(field.clone(), format!("invalid JSON patch: {e}"))
                    })?;
                self.apply_json_patch(&operations, target, &field)?;
            } else {
                for (patch, _) in &documents {
                    let options = entry.options.clone().unwrap_or_default();
                    self.apply_merge_patch(patch, entry.target.as_ref(), &field, &options)?;
                }
            }
        }
        Ok(())
    }

    fn selected(&self, target: &Target, field: &str) -> Result<Vec<usize>, RenderError> {
        let regex = |pattern: &str| {
            regex_lite::Regex::new(&format!("^(?:{pattern})$"))
                .map_err(|e| self.error(format!("{field}.target"), e.to_string()))
        };
        // kustomize anchors and matches every part of a target as a regular expression, the
        // group, version and kind too (`kind: (StatefulSet|Deployment)`).
        let group = target.group.as_deref().map(regex).transpose()?;
        let version = target.version.as_deref().map(regex).transpose()?;
        let kind = target.kind.as_deref().map(regex).transpose()?;
        let name = target.name.as_deref().map(regex).transpose()?;
        let namespace = target.namespace.as_deref().map(regex).transpose()?;
        let selector = |s: &Option<String>| {
            s.as_deref()
                .map(parse_label_selector)
                .transpose()
                .map_err(|e| self.error(format!("{field}.target"), e.to_string()))
        };
        let labels = selector(&target.label_selector)?;
        let annotations = selector(&target.annotation_selector)?;
        let mut selected = Vec::new();
        for (i, resource) in self.resources.iter().enumerate() {
            let object = &resource.object;
            let (object_group, object_version) = split_api_version(object.api_version());
            let gvk_ok = group.as_ref().is_none_or(|re| re.is_match(object_group))
                && version
                    .as_ref()
                    .is_none_or(|re| re.is_match(object_version))
                && kind.as_ref().is_none_or(|re| re.is_match(object.kind()));
            let name_ok = name
                .as_ref()
                .is_none_or(|re| resource.identities().any(|(n, _)| re.is_match(n)));
            let namespace_ok = namespace.as_ref().is_none_or(|re| {
                resource
                    .identities()
                    .any(|(_, ns)| re.is_match(ns) || (ns.is_empty() && re.is_match("default")))
            });
            let labels_ok = labels
                .as_ref()
                .is_none_or(|reqs| matches_all(reqs, &string_map(object.labels())));
            let annotations_ok = annotations
                .as_ref()
                .is_none_or(|reqs| matches_all(reqs, &string_map(object.annotations())));
            if gvk_ok && name_ok && namespace_ok && labels_ok && annotations_ok {
                selected.push(i);
            }
        }
        Ok(selected)
    }

    /// Applies a strategic merge patch. The patched object keeps its name and kind unless the
    /// patch's `options` allow a change (`allowNameChange`, `allowKindChange`), and always keeps
    /// its namespace, as kustomize's do.
    fn apply_merge_patch(
        &mut self,
        patch: &Value,
        target: Option<&Target>,
        field: &str,
        options: &BTreeMap<String, bool>,
    ) -> Result<(), RenderError> {
        if !patch.is_object() {
            return Err(self.error(
                field,
                "a patch must be a mapping (strategic merge) or a list of operations (JSON 6902)",
            ));
        }
        let allowed = |option: &str| options.get(option).copied().unwrap_or(false);
        let (name_may_change, kind_may_change) =
            (allowed("allowNameChange"), allowed("allowKindChange"));
        let selected = match target {
            Some(target) => self.selected(target, field)?,
            None => {
                // Without a target a patch names its object: kind, name and namespace.
                let patch_object = Object::new(patch.clone(), Origin::generated(self.file));
                let (group, _) = split_api_version(patch_object.api_version());
                let found: Vec<usize> = self
                    .resources
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| {
                        r.object.kind() == patch_object.kind()
                            && r.object.group() == group
                            && r.identities().any(|(n, ns)| {
                                n == patch_object.name()
                                    && same_namespace(ns, patch_object.namespace())
                            })
                    })
                    .map(|(i, _)| i)
                    .collect();
                if found.is_empty() {
                    return Err(self.error(
                        field,
                        format!(
                            "no object matches the patch for {}",
                            patch_object.object_ref()
                        ),
                    ));
                }
                found
            }
        };
        let delete = patch.get("$patch").and_then(Value::as_str) == Some("delete");
        let mut deleted = Vec::new();
        for i in selected {
            if delete {
                deleted.push(i);
                continue;
            }
            let resource = &mut self.resources[i];
            if name_may_change || kind_may_change {
                // References to the old name follow a rename, as they do a prefix.
                resource.remember_identity();
            }
            let (name, namespace) = (
                resource.object.name().to_string(),
                resource.object.namespace().to_string(),
            );
            let (api_version, kind) = (
                resource.object.api_version().to_string(),
                resource.object.kind().to_string(),
            );
            if is_builtin_group(resource.object.group()) {
                strategic_merge(&mut resource.object.value, patch).map_err(|problem| {
                    RenderError::Patch {
                        path: self.file.to_path_buf(),
                        field: field.to_string(),
                        object: resource.object.object_ref(),
                        problem,
                    }
                })?;
            } else {
                schemaless_merge(&mut resource.object.value, patch);
            }
            resource.object.value["apiVersion"] = Value::String(api_version);
            if !kind_may_change {
                resource.object.value["kind"] = Value::String(kind);
            }
            if !name_may_change {
                resource.object.set_name(&name);
            }
            if namespace.is_empty() {
                resource.object.metadata_mut().remove("namespace");
            } else {
                resource.object.set_namespace(&namespace);
            }
        }
        for i in deleted.into_iter().rev() {
            self.resources.remove(i);
        }
        Ok(())
    }

    fn apply_json_patch(
        &mut self,
        patch: &json_patch::Patch,
        target: &Target,
        field: &str,
    ) -> Result<(), RenderError> {
        for i in self.selected(target, field)? {
            let object = &mut self.resources[i].object;
            json_patch::patch(&mut object.value, &patch.0).map_err(|e| RenderError::Patch {
                path: self.file.to_path_buf(),
                field: field.to_string(),
                object: object.object_ref(),
                problem: e.to_string(),
            })?;
        }
        Ok(())
    }

    // ----- transformers -----

    fn set_namespace(&mut self, namespace: &str) {
        // `configurations` may name more namespace fields (kubebuilder's webhook
        // clientConfig.service.namespace); kustomize's `namespace` writes those too.
        let specs = self.config.namespace.clone();
        self.set_namespace_where(namespace, false, &specs);
    }

    /// Sets the namespace of every namespaced object (with `unset_only`, of those without one),
    /// and at the other fields `specs` name (in any object they apply to, cluster-scoped too).
    fn set_namespace_where(&mut self, namespace: &str, unset_only: bool, specs: &[FieldSpecEntry]) {
        // kustomize handles metadata.namespace, a Namespace's name and binding subjects itself
        // (below); only the other specs are plain fields to set.
        let extra: Vec<FieldSpecEntry> = specs
            .iter()
            .filter(|s| {
                let binding = matches!(
                    s.kind.as_deref(),
                    Some("RoleBinding" | "ClusterRoleBinding")
                );
                s.path != "metadata/namespace"
                    && s.path != "metadata/name"
                    && !(binding && s.path == "subjects")
            })
            .cloned()
            .collect();
        for resource in &mut self.resources {
            visit_field_specs(&mut resource.object, &extra, &mut |slot| {
                let unset = slot.as_str().is_none_or(str::is_empty);
                if !unset_only || unset {
                    *slot = Value::String(namespace.to_string());
                }
            });
            let object = &resource.object;
            if unset_only && !object.namespace().is_empty() {
                continue;
            }
            let kind = object.kind().to_string();
            if kind == "Namespace" && object.group().is_empty() {
                // kustomize renames Namespace objects to the namespace it sets.
                resource.rename(namespace);
            } else if !kustomize_cluster_scoped(object.api_version(), &kind) {
                resource.set_namespace(namespace);
            }
            // kustomize's namespace field specs also set (creating it) an APIService's
            // `spec.service.namespace`, whether or not the APIService names a service.
            if kind == "APIService" && resource.object.group() == "apiregistration.k8s.io" {
                let service = map_at_path(&mut resource.object.value, &["spec", "service"]);
                if !(unset_only && service.contains_key("namespace")) {
                    service.insert("namespace".into(), Value::String(namespace.into()));
                }
            }
            // Binding subjects named `default` get the namespace (kustomize's default mode);
            // ServiceAccount subjects of the build follow their account in name references.
            if kind == "RoleBinding" || kind == "ClusterRoleBinding" {
                let subjects = resource
                    .object
                    .value
                    .get_mut("subjects")
                    .and_then(Value::as_array_mut);
                for subject in subjects.into_iter().flatten() {
                    if subject.get("name").and_then(Value::as_str) == Some("default")
                        && let Some(map) = subject.as_object_mut()
                    {
                        map.insert("namespace".into(), Value::String(namespace.into()));
                    }
                }
            }
        }
    }

    fn add_affixes(&mut self, prefix: &str, suffix: &str) {
        self.add_affixes_where(prefix, suffix, &[]);
    }

    /// Adds a name prefix and suffix to the objects `specs` select (all when empty).
    fn add_affixes_where(&mut self, prefix: &str, suffix: &str, specs: &[FieldSpecEntry]) {
        if prefix.is_empty() && suffix.is_empty() {
            return;
        }
        for resource in &mut self.resources {
            let (group, version, kind) = resource.object.group_version_kind();
            if !specs.is_empty() && !specs.iter().any(|s| s.applies(&group, &version, &kind)) {
                continue;
            }
            let kind = resource.object.kind();
            // Kubernetes fixes these names: a CRD's is plural.group, an APIService's is
            // version.group, a Namespace's is what the namespace transformer set (kustomize's
            // prefixSuffixFieldSpecsToSkip).
            if kind == "CustomResourceDefinition"
                || kind == "Namespace"
                || (kind == "APIService" && group == "apiregistration.k8s.io")
            {
                continue;
            }
            let name = format!("{prefix}{}{suffix}", resource.object.name());
            resource.rename(&name);
            resource
                .affixes
                .push((prefix.to_string(), suffix.to_string()));
        }
    }

    fn add_labels(&mut self, k: &Kustomization) {
        /// One set of labels and where it goes.
        struct LabelJob<'a> {
            pairs: &'a BTreeMap<String, String>,
            selectors: bool,
            templates: bool,
            fields: &'a [FieldSpecEntry],
        }
        let mut entries = Vec::new();
        if !k.common_labels.is_empty() {
            entries.push(LabelJob {
                pairs: &k.common_labels,
                selectors: true,
                templates: true,
                fields: &[],
            });
        }
        for entry in &k.labels {
            entries.push(LabelJob {
                pairs: &entry.pairs,
                selectors: entry.include_selectors,
                templates: entry.include_templates || entry.include_selectors,
                fields: &entry.fields,
            });
        }
        for LabelJob {
            pairs,
            selectors,
            templates,
            fields,
        } in entries
        {
            for resource in &mut self.resources {
                let object = &mut resource.object;
                let (group, kind) = (object.group().to_string(), object.kind().to_string());
                let version = split_api_version(object.api_version()).1.to_string();
                let mut specs: Vec<FieldSpec> = vec![FieldSpec::all("metadata/labels", true)];
                if templates {
                    specs.extend(
                        LABEL_TEMPLATE_SPECS
                            .iter()
                            .filter(|s| s.applies(&group, &version, &kind))
                            .cloned(),
                    );
                }
                if selectors {
                    specs.extend(
                        LABEL_SELECTOR_SPECS
                            .iter()
                            .filter(|s| s.applies(&group, &version, &kind))
                            .cloned(),
                    );
                }
                for spec in &specs {
                    set_pairs(&mut object.value, &spec.path, spec.create, pairs);
                }
                // The entry's own fields, and those of `configurations` files: commonLabels
                // where selectors are labelled, templateLabels where only templates are.
                let configured: &[FieldSpecEntry] = match (selectors, templates) {
                    (true, _) => &self.config.common_labels,
                    (false, true) => &self.config.template_labels,
                    (false, false) => &[],
                };
                for field in fields.iter().chain(configured) {
                    if field.applies(&group, &version, &kind) {
                        set_pairs(&mut object.value, &field.path, field.create, pairs);
                    }
                }
            }
        }
    }

    fn add_annotations(&mut self, annotations: &BTreeMap<String, String>) {
        if annotations.is_empty() {
            return;
        }
        for resource in &mut self.resources {
            let object = &mut resource.object;
            let (group, kind) = (object.group().to_string(), object.kind().to_string());
            let version = split_api_version(object.api_version()).1.to_string();
            set_pairs(&mut object.value, "metadata/annotations", true, annotations);
            for spec in ANNOTATION_TEMPLATE_SPECS
                .iter()
                .filter(|s| s.applies(&group, &version, &kind))
            {
                set_pairs(&mut object.value, &spec.path, spec.create, annotations);
            }
            for spec in self
                .config
                .common_annotations
                .iter()
                .filter(|s| s.applies(&group, &version, &kind))
            {
                set_pairs(&mut object.value, &spec.path, spec.create, annotations);
            }
        }
    }

    fn set_replicas(&mut self, replicas: &[ReplicaEntry]) {
        if replicas.is_empty() {
            return;
        }
        // Entry index and count by name; a later entry for a name wins, as applying the list in
        // order would (one pass over the objects, not one per entry).
        let by_name: BTreeMap<&str, (usize, i64)> = replicas
            .iter()
            .enumerate()
            .map(|(i, entry)| (entry.name.as_str(), (i, entry.count)))
            .collect();
        for resource in &mut self.resources {
            let Some(count) = resource
                .identities()
                .filter_map(|(name, _)| by_name.get(name))
                .max_by_key(|(index, _)| *index)
                .map(|(_, count)| *count)
            else {
                continue;
            };
            let object = &mut resource.object;
            // kustomize's replicas field specs, by kind alone: kustomize's configuration, kept
            // byte-exact, not `crate::kinds::WORKLOADS` (whose divided kinds are Karmada's).
            let scalable = matches!(
                object.kind(),
                "Deployment" | "ReplicaSet" | "StatefulSet" | "ReplicationController"
            );
            if scalable {
                map_at_path(&mut object.value, &["spec"]).insert("replicas".into(), json!(count));
            }
            visit_field_specs(object, &self.config.replicas, &mut |slot| {
                *slot = json!(count);
            });
        }
    }

    fn set_images(&mut self, images: &[ImageEntry]) {
        if images.is_empty() {
            return;
        }
        // kustomize's own image fields, then those a `configurations` file names (custom
        // resources' images).
        let specs: Vec<FieldSpecEntry> = DEFAULT_IMAGE_PATHS
            .iter()
            .map(|path| FieldSpecEntry {
                path: (*path).to_string(),
                ..FieldSpecEntry::default()
            })
            .chain(self.config.images.iter().cloned())
            .collect();
        // One transformer per entry, in order, as kustomize runs them: an entry sees what the
        // ones before it wrote (`a` renamed to `b`, then `b` given a tag). Each runs its two
        // passes - every `containers`/`initContainers` list (not in CRDs), then the field specs
        // - so a container both reach is rewritten twice, which shows with `tagSuffix`.
        for entry in images {
            self.set_image_with(entry, &specs);
        }
    }

    /// One image transformer (kustomize's ImageTagTransformer): its legacy pass, then `specs`.
    pub(super) fn set_image_with(&mut self, entry: &ImageEntry, specs: &[FieldSpecEntry]) {
        let matcher = ImageMatcher::new(&entry.name);
        let set_image = |slot: &mut Value| set_image(slot, entry, &matcher);
        for resource in &mut self.resources {
            let object = &mut resource.object;
            if object.kind() != "CustomResourceDefinition" {
                visit_containers(&mut object.value, &mut |container| {
                    if let Some(image) = container.get_mut("image") {
                        set_image(image);
                    }
                });
            }
            visit_field_specs(object, specs, &mut |slot| set_image(slot));
        }
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

/// The image fields of kustomize's default configuration.
const DEFAULT_IMAGE_PATHS: [&str; 4] = [
    "spec/containers[]/image",
    "spec/initContainers[]/image",
    "spec/template/spec/containers[]/image",
    "spec/template/spec/initContainers[]/image",
];

/// Rewrites one image reference when it names `entry`'s image (kustomize's imageTagUpdater).
fn set_image(slot: &mut Value, entry: &ImageEntry, matcher: &ImageMatcher) {
    let Some(image) = slot.as_str() else {
        return;
    };
    if !matcher.matches(image) {
        return;
    }
    let (name, tag, digest) = kustomize_split(image);
    let (tag, digest) = (Some(tag), Some(digest));
    let name = entry.new_name.as_deref().unwrap_or(name);
    // kustomize reads an empty field as an absent one.
    let given = |field: &Option<String>| field.clone().filter(|v| !v.is_empty());
    let (tag, digest) = match (
        given(&entry.new_tag),
        given(&entry.digest),
        given(&entry.tag_suffix),
    ) {
        (Some(t), Some(d), _) => (Some(t), Some(d)),
        (Some(t), None, _) => (Some(t), None),
        (None, Some(d), _) => (None, Some(d)),
        // A suffix drops the digest: the suffixed tag names another image.
        (None, None, Some(suffix)) => (Some(format!("{}{suffix}", tag.unwrap_or(""))), None),
        (None, None, None) => (tag.map(str::to_string), digest.map(str::to_string)),
    };
    let mut image = name.to_string();
    if let Some(tag) = tag.filter(|t| !t.is_empty()) {
        image.push(':');
        image.push_str(&tag);
    }
    if let Some(digest) = digest.filter(|d| !d.is_empty()) {
        image.push('@');
        image.push_str(&digest);
    }
    *slot = Value::String(image);
}

/// Which images an `images` entry names (kustomize's image.IsImageMatched): its name read as a
/// regular expression, then an optional tag and digest - so `redis:6` names `redis:6` and the
/// name `*` every image.
struct ImageMatcher {
    name: String,
    /// The compiled expression; `None` for a name whose only special character is `.` (almost
    /// every name), which is matched by hand: a regex per image is slow on big bundles.
    pattern: Option<regex_lite::Regex>,
    literal: bool,
}

impl ImageMatcher {
    fn new(name: &str) -> Self {
        let literal = !name.contains(|c: char| "\\+*?()|[]{}^$".contains(c));
        let pattern = (!literal)
            .then(|| {
                regex_lite::Regex::new(&format!(
                    "^{name}(:[a-zA-Z0-9_.{{}}-]*)?(@sha256:[a-zA-Z0-9_.{{}}-]*)?$"
                ))
                .ok()
            })
            .flatten();
        ImageMatcher {
            name: name.to_string(),
            pattern,
            literal,
        }
    }

    fn matches(&self, image: &str) -> bool {
        if self.literal {
            // The name (`.` any character), then `(:tag)?(@sha256:tag)?` to the end.
            let tag = |s: &str| {
                s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.{}-".contains(&b))
            };
            let name = self.name.as_bytes();
            let Some(rest) = image
                .as_bytes()
                .get(..name.len())
                .filter(|head| head.iter().zip(name).all(|(i, n)| *n == b'.' || i == n))
                .and_then(|_| image.get(name.len()..))
            else {
                return false;
            };
            let (tagged, digest) = match rest.find("@sha256:") {
                Some(at) => (&rest[..at], Some(&rest[at + "@sha256:".len()..])),
                None => (rest, None),
            };
            return (tagged.is_empty() || tagged.strip_prefix(':').is_some_and(tag))
                && digest.is_none_or(tag);
        }
        match &self.pattern {
            Some(pattern) => pattern.is_match(image),
            // Go reads `^*` as a repeated anchor that every image matches; a name no regex
            // engine here takes is compared as it stands.
            None => self.name == "*" || kustomize_split(image).0 == self.name,
        }
    }
}

fn merged_options(global: &GeneratorOptions, local: &GeneratorOptions) -> GeneratorOptions {
    let mut merged = global.clone();
    merged.labels.extend(local.labels.clone());
    merged.annotations.extend(local.annotations.clone());
    if local.disable_name_suffix_hash.is_some() {
        merged.disable_name_suffix_hash = local.disable_name_suffix_hash;
    }
    if local.immutable.is_some() {
        merged.immutable = local.immutable;
    }
    merged
}

fn generated_object(
    kind: &str,
    args: &GeneratorArgs,
    namespace: &str,
    data: Value,
    options: &GeneratorOptions,
) -> Value {
    let mut metadata = Map::new();
    metadata.insert("name".into(), json!(args.name));
    if !namespace.is_empty() {
        metadata.insert("namespace".into(), json!(namespace));
    }
    if !options.labels.is_empty() {
        metadata.insert("labels".into(), json!(options.labels));
    }
    if !options.annotations.is_empty() {
        metadata.insert("annotations".into(), json!(options.annotations));
    }
    let mut object = Map::new();
    object.insert("apiVersion".into(), json!("v1"));
    object.insert("kind".into(), json!(kind));
    object.insert("metadata".into(), Value::Object(metadata));
    if let Value::Object(data) = data {
        object.extend(data);
    }
    if kind == "Secret" {
        object.insert(
            "type".into(),
            json!(args.secret_type.as_deref().unwrap_or("Opaque")),
        );
    }
    if options.immutable == Some(true) {
        object.insert("immutable".into(), json!(true));
    }
    Value::Object(object)
}

/// Base64 as kustomize writes generated data: in lines of 70 characters, each ending in a
/// newline once the encoding is 70 characters or longer (kyaml's `encodeBase64`). The
/// newlines are part of the content hash, so they must be reproduced exactly.
fn wrapped_base64(bytes: &[u8]) -> String {
    const LINE: usize = 70;
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    if encoded.len() < LINE {
        return encoded;
    }
    let mut out = String::with_capacity(encoded.len() + encoded.len() / LINE + 1);
    for chunk in encoded.as_bytes().chunks(LINE) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out
}

/// Kubernetes' `IsEnvVarName`: letters, digits, `_`, `-` and `.`, not starting with a digit.
/// Kustomize strips one pair of matching quotes around a literal's value.
fn strip_quotes(value: &str) -> &str {
    for quote in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(quote) && value.ends_with(quote) {
            return &value[1..value.len() - 1];
        }
    }
    value
}

fn string_map<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> BTreeMap<String, String> {
    pairs.map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

// ----- field specs -----

/// A path in objects of some kinds where a transformer writes (kustomize's FieldSpec).
#[derive(Debug, Clone)]
struct FieldSpec {
    group: Option<&'static str>,
    version: Option<&'static str>,
    kinds: &'static [&'static str],
    path: String,
    create: bool,
}

impl FieldSpec {
    fn all(path: &str, create: bool) -> Self {
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

    fn applies(&self, group: &str, version: &str, kind: &str) -> bool {
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
static LABEL_TEMPLATE_SPECS: std::sync::LazyLock<Vec<FieldSpec>> =
    std::sync::LazyLock::new(|| template_metadata_specs("labels", true));

/// Where `labels` with `includeSelectors` (and `commonLabels`) write selectors.
static LABEL_SELECTOR_SPECS: std::sync::LazyLock<Vec<FieldSpec>> = std::sync::LazyLock::new(|| {
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
static ANNOTATION_TEMPLATE_SPECS: std::sync::LazyLock<Vec<FieldSpec>> =
    std::sync::LazyLock::new(|| template_metadata_specs("annotations", false));

/// Writes `pairs` into the map at `path` (a `/`-separated path; lists on the way are entered
/// element by element). Missing maps are created only when `create` is set; a segment marked
/// `name[]` is a list and is never created.
fn set_pairs(value: &mut Value, path: &str, create: bool, pairs: &BTreeMap<String, String>) {
    visit_path(value, path, create, &mut |slot| add_pairs(slot, pairs));
}

/// Adds `pairs` to a map (or a null that becomes one).
fn add_pairs(slot: &mut Value, pairs: &BTreeMap<String, String>) {
    if slot.is_null() || slot.is_object() {
        let map = crate::object::ensure_map(slot);
        for (k, v) in pairs {
            map.insert(k.clone(), Value::String(v.clone()));
        }
    }
}

/// Calls `f` on every value the field specs that apply to `object` select.
fn visit_field_specs(object: &mut Object, specs: &[FieldSpecEntry], f: &mut dyn FnMut(&mut Value)) {
    let (group, version, kind) = object.group_version_kind();
    for spec in specs.iter().filter(|s| s.applies(&group, &version, &kind)) {
        visit_path(&mut object.value, &spec.path, spec.create, f);
    }
}

/// Calls `f` on every value at `path` (kustomize's field spec path: `/`-separated, lists on
/// the way entered element by element). Missing maps (and the last field, as null) are
/// created only when `create` is set; a segment marked `name[]` is a list, never created.
fn visit_path(value: &mut Value, path: &str, create: bool, f: &mut dyn FnMut(&mut Value)) {
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
fn pointers_at(value: &Value, path: &str) -> Vec<String> {
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
fn visit_containers(value: &mut Value, f: &mut dyn FnMut(&mut Map<String, Value>)) {
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

// ----- hashes and name references -----

/// Appends kustomize's content hash to generated ConfigMaps and Secrets.
fn add_name_hashes(resources: &mut [Resource]) -> Result<(), RenderError> {
    for resource in resources.iter_mut().filter(|r| r.needs_hash) {
        let hash = content_hash(&resource.object.value);
        let name = format!("{}-{hash}", resource.object.name());
        resource.rename(&name);
        resource.needs_hash = false;
    }
    Ok(())
}

/// kustomize's hash: SHA-256 of Go's JSON encoding of the kind and data, the first ten hex
/// digits with some letters swapped so the suffix never looks like a number or a word.
/// kustomize v5 hashes the generated object before it has a name, so the name is always empty
/// (checked against `kubectl kustomize`: the suffix does not change with the name).
pub fn content_hash(object: &Value) -> String {
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    let field = |key: &str| object.get(key).cloned().unwrap_or(json!(""));
    let mut encoded = Map::new();
    encoded.insert("kind".into(), json!(kind));
    encoded.insert("name".into(), json!(""));
    encoded.insert("data".into(), field("data"));
    if kind == "Secret" {
        encoded.insert("type".into(), field("type"));
        if let Some(string_data) = object.get("stringData").filter(|v| v.is_object()) {
            encoded.insert("stringData".into(), string_data.clone());
        }
    } else if let Some(binary) = object.get("binaryData").filter(|v| v.is_object()) {
        encoded.insert("binaryData".into(), binary.clone());
    }
    let json = go_json_escape(&Value::Object(encoded).to_string());
    let digest = Sha256::digest(json.as_bytes());
    let hex: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
    hex.chars()
        .map(|c| match c {
            '0' => 'g',
            '1' => 'h',
            '3' => 'k',
            'a' => 'm',
            'e' => 't',
            other => other,
        })
        .collect()
}

/// Go's `json.Marshal` escapes HTML characters and line separators; serde_json does not.
fn go_json_escape(json: &str) -> String {
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// A field that names another object.
struct Reference {
    /// JSON pointer of the name inside the referring object.
    pointer: String,
    /// Kind of the object it names.
    kind: String,
    /// Namespace to look the object up in, when the field says (binding subjects).
    namespace: Option<String>,
    /// The field sits beside a `namespace` that follows the named object (binding subjects).
    namespace_follows: bool,
}

/// Rewrites every reference to an object that was renamed during the build.
fn fix_name_references(resources: &mut [Resource], configured: &[NameReference]) {
    // (kind, any name an object has had) -> the objects; names do not change below, only the
    // fields that refer to them. (A scan of every object per reference was quadratic.)
    let mut by_kind_and_name: std::collections::HashMap<(String, String), Vec<usize>> =
        std::collections::HashMap::new();
    for (j, resource) in resources.iter().enumerate() {
        let kind = resource.object.kind();
        for (name, _) in resource.identities() {
            let entry = by_kind_and_name
                .entry((kind.to_string(), name.to_string()))
                .or_default();
            if entry.last() != Some(&j) {
                entry.push(j);
            }
        }
    }
    for i in 0..resources.len() {
        let mut references = references_of(&resources[i].object.value);
        // Fields a `configurations` file says name objects (custom resources' references).
        let (group, version, kind) = resources[i].object.group_version_kind();
        for named in configured {
            for spec in named
                .field_specs
                .iter()
                .filter(|s| s.applies(&group, &version, &kind))
            {
                for pointer in pointers_at(&resources[i].object.value, &spec.path) {
                    references.push(Reference {
                        pointer,
                        kind: named.kind.clone(),
                        namespace: None,
                        namespace_follows: false,
                    });
                }
            }
        }
        for reference in references {
            let Some(current) = resources[i]
                .object
                .value
                .pointer(&reference.pointer)
                .and_then(Value::as_str)
                .map(str::to_string)
            else {
                continue;
            };
            let referrer = &resources[i];
            let namespace = reference
                .namespace
                .clone()
                .unwrap_or_else(|| referrer.object.namespace().to_string());
            let cluster_scoped = kustomize_cluster_scoped_kind(&reference.kind);
            // A cluster-scoped referrer (an APIService, a ClusterRole) naming an object by its
            // name alone reaches it in any namespace, as kustomize's nameref lets it.
            let from_cluster = reference.namespace.is_none()
                && kustomize_cluster_scoped(referrer.object.api_version(), referrer.object.kind());
            // A reference names the object as the referrer knew it: compare with every
            // (name, namespace) the object has had, or its current namespace.
            // A RoleBinding subject without a namespace may also name a ServiceAccount of any
            // namespace another ServiceAccount subject of the binding names (kustomize's
            // SubsetThatCouldBeReferencedByResource).
            let subject_namespaces: Vec<&str> = if referrer.object.kind() == "RoleBinding"
                && reference.kind == "ServiceAccount"
                && reference.namespace.is_none()
            {
                array(referrer.object.value.get("subjects"))
                    .filter(|(_, s)| {
                        s.get("kind").and_then(Value::as_str) == Some("ServiceAccount")
                    })
                    .filter_map(|(_, s)| s.get("namespace").and_then(Value::as_str))
                    .collect()
            } else {
                Vec::new()
            };
            let named = by_kind_and_name
                .get(&(reference.kind.clone(), current.clone()))
                .map_or(&[][..], Vec::as_slice);
            let candidates: Vec<&Resource> = named
                .iter()
                .map(|&j| &resources[j])
                // kustomize's name references name a group and version; an object without
                // an apiVersion is never one's target.
                .filter(|r| !r.object.api_version().is_empty())
                .filter(|r| {
                    cluster_scoped
                        || from_cluster
                        || same_namespace(r.object.namespace(), &namespace)
                        || subject_namespaces.contains(&r.object.namespace())
                        || r.identities()
                            .any(|(n, ns)| n == current && same_namespace(ns, &namespace))
                })
                .collect();
            let chosen = match candidates.as_slice() {
                [one] => Some(*one),
                [] => None,
                many => {
                    let same_lineage: Vec<_> = many
                        .iter()
                        .filter(|r| r.affixes == referrer.affixes)
                        .collect();
                    match same_lineage.as_slice() {
                        [one] => Some(**one),
                        _ => None,
                    }
                }
            };
            if let Some(target) = chosen {
                let new_name = target.object.name().to_string();
                let new_namespace = target.object.namespace().to_string();
                if new_name != current
                    && let Some(slot) = resources[i].object.value.pointer_mut(&reference.pointer)
                {
                    *slot = Value::String(new_name);
                }
                // A binding subject also follows its ServiceAccount's namespace.
                if reference.namespace_follows
                    && !new_namespace.is_empty()
                    && let Some(subject) = reference
                        .pointer
                        .strip_suffix("/name")
                        .and_then(|p| resources[i].object.value.pointer_mut(p))
                        .and_then(Value::as_object_mut)
                {
                    subject.insert("namespace".into(), Value::String(new_namespace));
                }
            }
        }
    }
}

fn references_of(object: &Value) -> Vec<Reference> {
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    let mut refs = Vec::new();
    let mut add = |pointer: String, kind: &'static str| {
        refs.push(Reference {
            pointer,
            kind: kind.to_string(),
            namespace: None,
            namespace_follows: false,
        })
    };
    for (kind, pointer) in pod_references(object) {
        add(pointer, kind);
    }
    // kustomize's PriorityClass references: every pod template but a ReplicaSet's.
    if kind != "ReplicaSet"
        && let Some(pod) = pod_spec_pointer(kind)
    {
        add(format!("{pod}/priorityClassName"), "PriorityClass");
    }
    match kind {
        "StatefulSet" => {
            add("/spec/serviceName".into(), "Service");
            for (i, _) in array(object.pointer("/spec/volumeClaimTemplates")) {
                add(
                    format!("/spec/volumeClaimTemplates/{i}/spec/storageClassName"),
                    "StorageClass",
                );
            }
        }
        "PersistentVolumeClaim" => {
            add("/spec/volumeName".into(), "PersistentVolume");
            add("/spec/storageClassName".into(), "StorageClass");
        }
        "PersistentVolume" => {
            add("/spec/storageClassName".into(), "StorageClass");
            add("/spec/azureFile/secretName".into(), "Secret");
        }
        "StorageClass" => {
            for parameter in [
                "secretName",
                "adminSecretName",
                "userSecretName",
                "secretRef",
            ] {
                add(format!("/parameters/{parameter}"), "Secret");
            }
        }
        "Role" | "ClusterRole" => {
            for (i, rule) in array(object.get("rules")) {
                for (j, _) in array(rule.get("resourceNames")) {
                    let pointer = format!("/rules/{i}/resourceNames/{j}");
                    add(pointer.clone(), "ConfigMap");
                    add(pointer.clone(), "Secret");
                    if kind == "ClusterRole" {
                        add(pointer, "PersistentVolume");
                    }
                }
            }
        }
        "APIService" => add("/spec/service/name".into(), "Service"),
        // (kustomize lists Ingress spec.ingressClassName too, under the group
        // `networking.k8s.io/v1`, which no IngressClass has: it is never followed.)
        "ValidatingAdmissionPolicyBinding" => {
            add("/spec/policyName".into(), "ValidatingAdmissionPolicy")
        }
        "ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration" => {
            // The service is named with its namespace, which follows the Service's.
            for (i, webhook) in array(object.get("webhooks")) {
                let namespace = webhook
                    .pointer("/clientConfig/service/namespace")
                    .and_then(Value::as_str);
                refs.push(Reference {
                    pointer: format!("/webhooks/{i}/clientConfig/service/name"),
                    kind: "Service".into(),
                    namespace: namespace.map(str::to_string),
                    namespace_follows: namespace.is_some(),
                });
            }
        }
        "Ingress" => {
            add("/spec/defaultBackend/service/name".into(), "Service");
            add("/spec/backend/serviceName".into(), "Service");
            for (i, rule) in array(object.pointer("/spec/rules")) {
                for (j, _) in array(rule.pointer("/http/paths")) {
                    add(
                        format!("/spec/rules/{i}/http/paths/{j}/backend/service/name"),
                        "Service",
                    );
                    add(
                        format!("/spec/rules/{i}/http/paths/{j}/backend/serviceName"),
                        "Service",
                    );
                }
            }
            for (i, _) in array(object.pointer("/spec/tls")) {
                add(format!("/spec/tls/{i}/secretName"), "Secret");
            }
            // ingress-nginx annotations that name a Secret or ConfigMap of the Ingress's
            // namespace (kustomize's table; `/` is `~1` in a JSON pointer).
            for (annotation, named) in [
                ("ingress.kubernetes.io~1auth-secret", "Secret"),
                ("nginx.ingress.kubernetes.io~1auth-secret", "Secret"),
                ("nginx.ingress.kubernetes.io~1auth-tls-secret", "Secret"),
                (
                    "nginx.ingress.kubernetes.io~1fastcgi-params-configmap",
                    "ConfigMap",
                ),
            ] {
                add(format!("/metadata/annotations/{annotation}"), named);
            }
        }
        "ServiceAccount" => {
            for (i, _) in array(object.get("secrets")) {
                add(format!("/secrets/{i}/name"), "Secret");
            }
            for (i, _) in array(object.get("imagePullSecrets")) {
                add(format!("/imagePullSecrets/{i}/name"), "Secret");
            }
        }
        "HorizontalPodAutoscaler" => {
            let target = object
                .pointer("/spec/scaleTargetRef/kind")
                .and_then(Value::as_str);
            match target {
                Some("Deployment") => add("/spec/scaleTargetRef/name".into(), "Deployment"),
                Some("StatefulSet") => add("/spec/scaleTargetRef/name".into(), "StatefulSet"),
                Some("ReplicaSet") => add("/spec/scaleTargetRef/name".into(), "ReplicaSet"),
                Some("ReplicationController") => {
                    add("/spec/scaleTargetRef/name".into(), "ReplicationController")
                }
                _ => {}
            }
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            match object.pointer("/roleRef/kind").and_then(Value::as_str) {
                Some("Role") => add("/roleRef/name".into(), "Role"),
                Some("ClusterRole") => add("/roleRef/name".into(), "ClusterRole"),
                _ => {}
            }
            for (i, subject) in array(object.get("subjects")) {
                if subject.get("kind").and_then(Value::as_str) == Some("ServiceAccount") {
                    refs.push(Reference {
                        pointer: format!("/subjects/{i}/name"),
                        kind: "ServiceAccount".into(),
                        namespace: subject
                            .get("namespace")
                            .and_then(Value::as_str)
                            .map(str::to_string),
                        namespace_follows: true,
                    });
                }
            }
        }
        _ => {}
    }
    refs
}

fn array(value: Option<&Value>) -> impl Iterator<Item = (usize, &Value)> {
    value
        .and_then(Value::as_array)
        .into_iter()
        .flat_map(|items| items.iter().enumerate())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_match_and_split_as_kustomize_does() {
        assert!(ImageMatcher::new("*").matches("nginx:1.0"));
        assert!(ImageMatcher::new("redis:6").matches("redis:6"));
        assert!(!ImageMatcher::new("nginx").matches("nginx/exporter"));
        assert!(ImageMatcher::new("nginx").matches("nginx@sha256:abc"));
        assert!(ImageMatcher::new("gcr.io/app").matches("gcr.io/app:1.0@sha256:abc"));
        assert!(!ImageMatcher::new("gcr.io/app").matches("gcr.io/app:1:0"));
        assert!(!ImageMatcher::new("gcr.io/app").matches("gcr.io/app@md5:abc"));
        assert!(!ImageMatcher::new("app").matches("ap"));
        assert_eq!(
            kustomize_split("registry.local/nginx:1.25:1.0"),
            ("registry.local/nginx", "1.25:1.0", "")
        );
        assert_eq!(
            kustomize_split("localhost:5000/app:1.0@sha256:abc"),
            ("localhost:5000/app", "1.0", "sha256:abc")
        );
        assert_eq!(kustomize_split("app@sha256:a:b"), ("app", "", "sha256:a:b"));
        assert_eq!(kustomize_split("app"), ("app", "", ""));
    }

    #[test]
    fn content_hash_matches_kustomize_encoding() {
        // Suffixes `kubectl kustomize` (v5.5) gives these generators.
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": "cfg"}, "data": {"a": "b"}});
        assert_eq!(content_hash(&cm), "4h2mbtbbt6");
        // `s3cr<t>` base64-encoded; the type and Go's HTML escaping are part of the hash.
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                            "metadata": {"name": "sec"}, "data": {"pw": "czNjcjx0Pg=="}});
        assert_eq!(content_hash(&secret), "d7t68ddt6t");
    }

    /// Writes `files` to a temporary repository and builds its root kustomization.
    pub(super) fn build_tree(files: &[(&str, &str)]) -> Result<Vec<Object>, RenderError> {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            crate::render::tests::write(dir.path(), path, text);
        }
        let repo = Repo::open(dir.path()).unwrap();
        build(&repo, Path::new("."))
    }

    #[test]
    fn components_and_bases_must_have_the_right_kind() {
        const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n";
        const COMPONENT: &str =
            "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\nnamePrefix: x-\n";
        let error = build_tree(&[
            (
                "kustomization.yaml",
                "resources: [cm.yaml]\ncomponents: [base]\n",
            ),
            ("cm.yaml", CM),
            ("base/kustomization.yaml", "namePrefix: x-\n"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            error.contains(
                "base/kustomization.yaml: kind: kind \"Kustomization\": only a `kind: Component`"
            ),
            "{error}"
        );
        let error = build_tree(&[
            ("kustomization.yaml", "resources: [comp]\n"),
            ("comp/kustomization.yaml", COMPONENT),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("comp/kustomization.yaml: kind: kind \"Component\""),
            "{error}"
        );
        let objects = build_tree(&[
            (
                "kustomization.yaml",
                "resources: [cm.yaml]\ncomponents: [comp]\n",
            ),
            ("cm.yaml", CM),
            ("comp/kustomization.yaml", COMPONENT),
        ])
        .unwrap();
        assert_eq!(objects[0].name(), "x-c");
    }

    #[test]
    fn kustomize_refusals_are_refused() {
        const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n";
        // An apiVersion other than the kind's (kustomize: "apiVersion for Kustomization
        // should be kustomize.config.k8s.io/v1beta1").
        for (kustomization, component) in [
            ("apiVersion: v1\nresources: [cm.yaml]\n", ""),
            (
                "resources: [cm.yaml]\ncomponents: [comp]\n",
                "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Component\n",
            ),
        ] {
            let error = build_tree(&[
                ("kustomization.yaml", kustomization),
                ("cm.yaml", CM),
                ("comp/kustomization.yaml", component),
            ])
            .unwrap_err()
            .to_string();
            assert!(error.contains("apiVersion"), "{error}");
        }
        // An overlay under its base naming the base's directory: kustomize's "cycle detected:
        // candidate root contains visited root".
        let error = build_tree(&[
            ("kustomization.yaml", "resources: [app/overlays/prod]\n"),
            ("app/kustomization.yaml", "resources: [cm.yaml]\n"),
            ("app/cm.yaml", CM),
            (
                "app/overlays/prod/kustomization.yaml",
                "resources: [../..]\n",
            ),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("app/kustomization.yaml: resources: cycle"),
            "{error}"
        );
    }

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

    #[test]
    fn configured_namespace_fields_are_set_and_webhooks_follow_their_service() {
        let objects = build_tree(&[
            (
                "kustomization.yaml",
                "namespace: ops\nnamePrefix: p-\nresources: [r.yaml]\nconfigurations: [c.yaml]\n",
            ),
            (
                "c.yaml",
                "namespace:\n- {kind: MyHook, path: spec/target/namespace, create: true}\n",
            ),
            (
                "r.yaml",
                "apiVersion: v1\nkind: Service\nmetadata: {name: hook, namespace: system}\n---\n\
                 apiVersion: example.com/v1\nkind: MyHook\nmetadata: {name: h}\n---\n\
                 apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\n\
                 metadata: {name: v}\nwebhooks:\n- name: v.example.com\n  \
                 clientConfig: {service: {name: hook, namespace: system}}\n",
            ),
        ])
        .unwrap();
        let by_kind = |kind: &str| objects.iter().find(|o| o.kind() == kind).unwrap();
        assert_eq!(
            by_kind("MyHook").value["spec"]["target"]["namespace"],
            "ops"
        );
        assert_eq!(
            by_kind("ValidatingWebhookConfiguration").value["webhooks"][0]["clientConfig"]["service"],
            json!({"name": "p-hook", "namespace": "ops"})
        );
    }

    #[test]
    fn generators_run_before_the_components_of_their_kustomization() {
        // kustomize v5.5 runs a kustomization's generators before its components: a component
        // merges into what the overlay generates, and the overlay cannot merge into what a
        // component generates (kustomize: "does not exist; cannot merge or replace").
        const COMPONENT: &str = "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\n";
        let objects = build_tree(&[
            (
                "kustomization.yaml",
                "configMapGenerator:\n- {name: c, literals: [A=1]}\ncomponents: [comp]\n",
            ),
            (
                "comp/kustomization.yaml",
                &format!(
                    "{COMPONENT}configMapGenerator:\n- {{name: c, behavior: merge, literals: [B=2]}}\n"
                ),
            ),
        ])
        .unwrap();
        assert_eq!(objects[0].value["data"], json!({"A": "1", "B": "2"}));
        let error = build_tree(&[
            (
                "kustomization.yaml",
                "configMapGenerator:\n- {name: c, behavior: replace, literals: [A=1]}\n\
                 components: [comp]\n",
            ),
            (
                "comp/kustomization.yaml",
                &format!("{COMPONENT}configMapGenerator:\n- {{name: c, literals: [B=2]}}\n"),
            ),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("configMapGenerator[0]") && error.contains("no ConfigMap named \"c\""),
            "{error}"
        );
    }

    #[test]
    fn a_scalar_patch_is_refused_not_applied() {
        let error = build_tree(&[
            (
                "kustomization.yaml",
                "resources: [d.yaml]\npatches:\n- target: {kind: Deployment}\n  patch: \"just a string\"\n",
            ),
            ("d.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: 5\n"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("patches[0]: a patch must be a mapping"),
            "{error}"
        );
    }

    #[test]
    fn literal_quotes_are_stripped_once() {
        assert_eq!(strip_quotes("\"a b\""), "a b");
        assert_eq!(strip_quotes("'x'"), "x");
        assert_eq!(strip_quotes("\"x"), "\"x");
    }
}
