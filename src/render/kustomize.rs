//! The kustomize subset Flotilla builds: resources, generators, patches, namespace, name
//! prefix/suffix, labels, annotations, replicas and images, with kustomize v5's order and name
//! references. Anything else in a kustomization is refused by name, never silently ignored.
//!
//! A build runs like kustomize's: each kustomization accumulates its resources (building its
//! bases first), runs its generators, then its transformers in kustomize's fixed order. Only
//! the top-level build adds content hashes to generated names and then rewrites the references
//! to renamed objects, so that every level's renames are known by then.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::load::{Repo, parse_documents};
use super::merge::{json_merge, strategic_merge};
use super::{RenderError, kustomization_file};
use crate::labels::{matches_all, parse_label_selector};
use crate::object::{
    Object, Origin, Scopes, is_builtin_group, map_at_path, pod_references, split_api_version,
};

/// Builds the kustomization in `dir` (root-relative) into its objects.
pub fn build(repo: &Repo, dir: &Path) -> Result<Vec<Object>, RenderError> {
    let mut resources = accumulate(repo, dir, &mut Vec::new())?;
    add_name_hashes(&mut resources)?;
    fix_name_references(&mut resources);
    Ok(resources.into_iter().map(|r| r.object).collect())
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
}

impl Resource {
    fn new(object: Object) -> Self {
        Resource {
            object,
            history: Vec::new(),
            affixes: Vec::new(),
            needs_hash: false,
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
    #[allow(dead_code)]
    kind: Option<String>,
    #[allow(dead_code)]
    metadata: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    resources: Vec<String>,
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
    helm_charts: Vec<super::helm::HelmChart>,
    helm_globals: Option<super::helm::HelmGlobals>,
}

/// Kustomization fields kustomize has and Flotilla refuses rather than ignores.
const UNSUPPORTED_FIELDS: &[&str] = &[
    "buildMetadata",
    "components",
    "configurations",
    "crds",
    "generators",
    "helmChartInflationGenerator",
    "openapi",
    "replacements",
    "sortOptions",
    "transformers",
    "validators",
    "vars",
];

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

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FieldSpecEntry {
    path: String,
    group: Option<String>,
    #[allow(dead_code)]
    version: Option<String>,
    kind: Option<String>,
    #[serde(default)]
    create: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ImageEntry {
    name: String,
    new_name: Option<String>,
    new_tag: Option<String>,
    digest: Option<String>,
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
    #[allow(dead_code)]
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
    // Check the raw keys first so that unsupported features get a message of their own.
    let documents = parse_documents(&text, path)?;
    if let Some((Value::Object(map), _)) = documents.first() {
        if let Some(field) = map
            .keys()
            .find(|k| UNSUPPORTED_FIELDS.contains(&k.as_str()))
        {
            return Err(RenderError::Kustomization {
                path: path.to_path_buf(),
                field: field.clone(),
                problem: "not supported by Flotilla's kustomize subset".into(),
            });
        }
    } else if !documents.is_empty() {
        return Err(RenderError::Kustomization {
            path: path.to_path_buf(),
            field: "(document)".into(),
            problem: "expected a mapping".into(),
        });
    }
    // Deserialise from the text, not the tree: `newTag: 1.10` must stay "1.10".
    serde_saphyr::from_str_with_options::<Option<Kustomization>>(
        &text,
        serde_saphyr::options! { legacy_octal_numbers: true, with_snippet: false },
    )
    .map(Option::unwrap_or_default)
    .map_err(|error| RenderError::Yaml {
        path: path.to_path_buf(),
        line: error.location().map(|l| l.line() as usize).unwrap_or(0),
        message: error.to_string().lines().next().unwrap_or("").to_string(),
    })
}

// ----- accumulation -----

fn accumulate(
    repo: &Repo,
    dir: &Path,
    stack: &mut Vec<PathBuf>,
) -> Result<Vec<Resource>, RenderError> {
    let Some(file) = kustomization_file(repo, dir) else {
        return Err(RenderError::Kustomization {
            path: dir.to_path_buf(),
            field: "resources".into(),
            problem: "directory has no kustomization.yaml".into(),
        });
    };
    if stack.contains(&dir.to_path_buf()) {
        return Err(RenderError::Kustomization {
            path: file,
            field: "resources".into(),
            problem: "cycle: this kustomization includes itself".into(),
        });
    }
    stack.push(dir.to_path_buf());
    let kustomization = read_kustomization(repo, &file)?;
    let mut build = Level {
        repo,
        dir,
        file: &file,
        resources: Vec::new(),
    };

    // Resources and bases, each base fully built first.
    for reference in kustomization.resources.iter().chain(&kustomization.bases) {
        let path = repo.resolve(dir, reference, &file)?;
        if repo.absolute(&path).is_dir() {
            let base = accumulate(repo, &path, stack)?;
            build.append(base)?;
        } else {
            let objects = repo.load_objects(&path)?;
            build.append(objects.into_iter().map(Resource::new).collect())?;
        }
    }
    stack.pop();

    // Generators, then the transformers in kustomize's order.
    build.generate(&kustomization, "configMapGenerator")?;
    build.generate(&kustomization, "secretGenerator")?;
    let inflated = super::helm::inflate_charts(
        repo,
        dir,
        &file,
        &kustomization.helm_charts,
        kustomization.helm_globals.as_ref(),
    )?;
    build.append(inflated.into_iter().map(Resource::new).collect())?;
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
    Ok(build.resources)
}

/// One kustomization being built.
struct Level<'a> {
    repo: &'a Repo,
    dir: &'a Path,
    file: &'a Path,
    resources: Vec<Resource>,
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
        for resource in incoming {
            let id = resource.object.object_ref();
            if let Some(existing) = self.resources.iter().find(|r| r.object.object_ref() == id) {
                return Err(RenderError::Duplicate {
                    object: id,
                    first: existing.object.origin.clone(),
                    second: resource.object.origin.clone(),
                });
            }
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

    fn generate(&mut self, k: &Kustomization, field: &str) -> Result<(), RenderError> {
        let (list, kind) = match field {
            "configMapGenerator" => (&k.config_map_generator, "ConfigMap"),
            _ => (&k.secret_generator, "Secret"),
        };
        for (index, args) in list.iter().enumerate() {
            let field = format!("{field}[{index}]");
            let data = self.generator_data(args, &field)?;
            let options = merged_options(&k.generator_options, &args.options);
            let namespace = args.namespace.clone().unwrap_or_default();
            let behavior = args.behavior.as_deref().unwrap_or("create");
            let existing = self.resources.iter().position(|r| {
                r.object.kind() == kind
                    && r.known_as(&args.name)
                    && r.known_in_namespace(&namespace)
            });
            match (behavior, existing) {
                ("create", None) => {
                    let object = generated_object(kind, args, &namespace, data, &options);
                    let mut resource = Resource::new(Object::new(
                        object,
                        Origin::generated(self.file.to_path_buf()),
                    ));
                    resource.needs_hash = !options.disable_name_suffix_hash.unwrap_or(false);
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
                ("merge" | "replace", Some(i)) => {
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
                ("merge" | "replace", None) => {
                    return Err(self.error(
                        field,
                        format!(
                            "behavior {behavior}: no {kind} named {:?} to {behavior}",
                            args.name
                        ),
                    ));
                }
                (other, _) => {
                    return Err(self.error(
                        format!("{field}.behavior"),
                        format!("{other:?} is not one of create, merge, replace"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The `data` / `binaryData` of a generator, from literals, files and env files.
    fn generator_data(&self, args: &GeneratorArgs, field: &str) -> Result<Value, RenderError> {
        let mut pairs: Vec<(String, Vec<u8>)> = Vec::new();
        for env in args.envs.iter().chain(args.env.as_ref()) {
            let (path, text) = self.read_relative(env)?;
            for (number, line) in text.lines().enumerate() {
                let line = line.trim_start_matches('\u{feff}').trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let Some((key, value)) = line.split_once('=') else {
                    return Err(self.error(
                        format!("{field}.envs"),
                        format!(
                            "{}:{}: {line:?} has no `=`; Flotilla does not read values from its own environment",
                            path.display(),
                            number + 1
                        ),
                    ));
                };
                pairs.push((key.trim().to_string(), value.as_bytes().to_vec()));
            }
        }
        for literal in &args.literals {
            let Some((key, value)) = literal.split_once('=') else {
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
            let bytes =
                std::fs::read(self.repo.absolute(&path)).map_err(|source| RenderError::Read {
                    path: path.clone(),
                    source,
                })?;
            pairs.push((key, bytes));
        }
        let secret = args.secret_type.is_some() || field.starts_with("secretGenerator");
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
        if !data.is_empty() {
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
            for (patch, _) in parse_documents(&text, self.file)? {
                self.apply_merge_patch(&patch, None, &field)?;
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
            let documents = parse_documents(&text, self.file)?;
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
                    self.apply_merge_patch(patch, entry.target.as_ref(), &field)?;
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
            let (group, version) = split_api_version(object.api_version());
            let gvk_ok = target.group.as_deref().is_none_or(|g| g == group)
                && target.version.as_deref().is_none_or(|v| v == version)
                && target.kind.as_deref().is_none_or(|k| k == object.kind());
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

    fn apply_merge_patch(
        &mut self,
        patch: &Value,
        target: Option<&Target>,
        field: &str,
    ) -> Result<(), RenderError> {
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
                json_merge(&mut resource.object.value, patch);
            }
            // A patch never changes which object it patched.
            resource.object.value["apiVersion"] = Value::String(api_version);
            resource.object.value["kind"] = Value::String(kind);
            resource.object.set_name(&name);
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
        let scopes = Scopes::from_objects(self.resources.iter().map(|r| &r.object));
        for resource in &mut self.resources {
            let object = &resource.object;
            let kind = object.kind().to_string();
            if kind == "Namespace" && object.group().is_empty() {
                // kustomize renames Namespace objects to the namespace it sets.
                resource.rename(namespace);
            } else if !scopes.is_cluster_scoped(object.group(), &kind) {
                resource.set_namespace(namespace);
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
        if prefix.is_empty() && suffix.is_empty() {
            return;
        }
        for resource in &mut self.resources {
            let kind = resource.object.kind();
            // Kubernetes fixes these names: a CRD's is plural.group, a Namespace's is what
            // the namespace transformer set.
            if kind == "CustomResourceDefinition" || kind == "Namespace" {
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
                let mut specs: Vec<FieldSpec> = vec![FieldSpec::all("metadata/labels", true)];
                if templates {
                    specs.extend(
                        LABEL_TEMPLATE_SPECS
                            .iter()
                            .filter(|s| s.applies(&group, &kind))
                            .cloned(),
                    );
                }
                if selectors {
                    specs.extend(
                        LABEL_SELECTOR_SPECS
                            .iter()
                            .filter(|s| s.applies(&group, &kind))
                            .cloned(),
                    );
                }
                for spec in &specs {
                    set_pairs(&mut object.value, &spec.path, spec.create, pairs);
                }
                for field in fields {
                    let applies = field.kind.as_deref().is_none_or(|k| k == kind)
                        && field.group.as_deref().is_none_or(|g| g == group);
                    if applies {
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
            set_pairs(&mut object.value, "metadata/annotations", true, annotations);
            for spec in ANNOTATION_TEMPLATE_SPECS
                .iter()
                .filter(|s| s.applies(&group, &kind))
            {
                set_pairs(&mut object.value, &spec.path, spec.create, annotations);
            }
        }
    }

    fn set_replicas(&mut self, replicas: &[ReplicaEntry]) {
        for entry in replicas {
            for resource in &mut self.resources {
                let kind = resource.object.kind();
                let scalable = matches!(
                    kind,
                    "Deployment" | "ReplicaSet" | "StatefulSet" | "ReplicationController"
                );
                if scalable && resource.known_as(&entry.name) {
                    map_at_path(&mut resource.object.value, &["spec"])
                        .insert("replicas".into(), json!(entry.count));
                }
            }
        }
    }

    fn set_images(&mut self, images: &[ImageEntry]) {
        if images.is_empty() {
            return;
        }
        for resource in &mut self.resources {
            visit_containers(&mut resource.object.value, &mut |container| {
                let Some(image) = container.get("image").and_then(Value::as_str) else {
                    return;
                };
                let (name, tag, digest) = split_image(image);
                let Some(entry) = images.iter().find(|e| e.name == name) else {
                    return;
                };
                let name = entry.new_name.as_deref().unwrap_or(name);
                let image = match (&entry.digest, &entry.new_tag) {
                    (Some(d), _) => format!("{name}@{d}"),
                    (None, Some(t)) => format!("{name}:{t}"),
                    (None, None) => match (tag, digest) {
                        (_, Some(d)) => format!("{name}@{d}"),
                        (Some(t), None) => format!("{name}:{t}"),
                        (None, None) => name.to_string(),
                    },
                };
                container.insert("image".into(), Value::String(image));
            });
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
    kinds: &'static [&'static str],
    path: String,
    create: bool,
}

impl FieldSpec {
    fn all(path: &str, create: bool) -> Self {
        FieldSpec {
            group: None,
            kinds: &[],
            path: path.into(),
            create,
        }
    }

    fn applies(&self, group: &str, kind: &str) -> bool {
        self.group.is_none_or(|g| g == group)
            && (self.kinds.is_empty() || self.kinds.contains(&kind))
    }
}

const POD_TEMPLATE_KINDS: &[&str] = &[
    "Deployment",
    "ReplicaSet",
    "DaemonSet",
    "StatefulSet",
    "Job",
    "ReplicationController",
];

fn spec(kinds: &'static [&'static str], path: &str, create: bool) -> FieldSpec {
    FieldSpec {
        group: None,
        kinds,
        path: path.into(),
        create,
    }
}

/// Where `labels` with `includeTemplates` (and `commonLabels`) write besides metadata.
static LABEL_TEMPLATE_SPECS: std::sync::LazyLock<Vec<FieldSpec>> = std::sync::LazyLock::new(|| {
    vec![
        spec(POD_TEMPLATE_KINDS, "spec/template/metadata/labels", true),
        spec(&["CronJob"], "spec/jobTemplate/metadata/labels", true),
        spec(
            &["CronJob"],
            "spec/jobTemplate/spec/template/metadata/labels",
            true,
        ),
        // A list: labelled where it exists, never created (kustomize's `[]`).
        spec(
            &["StatefulSet"],
            "spec/volumeClaimTemplates[]/metadata/labels",
            true,
        ),
    ]
});

/// Where `labels` with `includeSelectors` (and `commonLabels`) write selectors.
static LABEL_SELECTOR_SPECS: std::sync::LazyLock<Vec<FieldSpec>> = std::sync::LazyLock::new(|| {
    let workloads: &'static [&'static str] =
        &["Deployment", "ReplicaSet", "DaemonSet", "StatefulSet"];
    let mut specs = vec![
        spec(&["Service"], "spec/selector", true),
        spec(&["ReplicationController"], "spec/selector", true),
        spec(workloads, "spec/selector/matchLabels", true),
        spec(
            &["CronJob"],
            "spec/jobTemplate/spec/selector/matchLabels",
            false,
        ),
        spec(&["PodDisruptionBudget"], "spec/selector/matchLabels", false),
        spec(&["NetworkPolicy"], "spec/podSelector/matchLabels", false),
        spec(
            &["NetworkPolicy"],
            "spec/ingress/from/podSelector/matchLabels",
            false,
        ),
        spec(
            &["NetworkPolicy"],
            "spec/egress/to/podSelector/matchLabels",
            false,
        ),
    ];
    for affinity in ["podAffinity", "podAntiAffinity"] {
        specs.push(spec(
            workloads,
            &format!("spec/template/spec/affinity/{affinity}/preferredDuringSchedulingIgnoredDuringExecution/podAffinityTerm/labelSelector/matchLabels"),
            false,
        ));
        specs.push(spec(
            workloads,
            &format!("spec/template/spec/affinity/{affinity}/requiredDuringSchedulingIgnoredDuringExecution/labelSelector/matchLabels"),
            false,
        ));
    }
    specs.push(spec(
        workloads,
        "spec/template/spec/topologySpreadConstraints/labelSelector/matchLabels",
        false,
    ));
    specs
});

/// Where `commonAnnotations` write besides metadata.
static ANNOTATION_TEMPLATE_SPECS: std::sync::LazyLock<Vec<FieldSpec>> =
    std::sync::LazyLock::new(|| {
        vec![
            spec(
                POD_TEMPLATE_KINDS,
                "spec/template/metadata/annotations",
                true,
            ),
            spec(&["CronJob"], "spec/jobTemplate/metadata/annotations", true),
            spec(
                &["CronJob"],
                "spec/jobTemplate/spec/template/metadata/annotations",
                true,
            ),
        ]
    });

/// Writes `pairs` into the map at `path` (a `/`-separated path; lists on the way are entered
/// element by element). Missing maps are created only when `create` is set; a segment marked
/// `name[]` is a list and is never created.
fn set_pairs(value: &mut Value, path: &str, create: bool, pairs: &BTreeMap<String, String>) {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    set_pairs_at(value, &segments, create, pairs);
}

fn set_pairs_at(value: &mut Value, path: &[&str], create: bool, pairs: &BTreeMap<String, String>) {
    if let Value::Array(items) = value {
        for item in items {
            set_pairs_at(item, path, create, pairs);
        }
        return;
    }
    let Some((first, rest)) = path.split_first() else {
        if value.is_null() || value.is_object() {
            let map = crate::object::ensure_map(value);
            for (k, v) in pairs {
                map.insert(k.clone(), Value::String(v.clone()));
            }
        }
        return;
    };
    if value.is_null() && create {
        *value = Value::Object(Map::new());
    }
    let Value::Object(map) = value else {
        return;
    };
    // `name[]` is a list: entered element by element where it exists, never created.
    let (first, is_list) = match first.strip_suffix("[]") {
        Some(name) => (name, true),
        None => (*first, false),
    };
    match map.get_mut(first) {
        Some(child) if !child.is_null() => set_pairs_at(child, rest, create, pairs),
        _ if create && !is_list => {
            let child = map.entry(first.to_string()).or_insert(Value::Null);
            set_pairs_at(child, rest, create, pairs);
        }
        _ => {}
    }
}

/// Calls `f` on every container map in `containers` / `initContainers` lists anywhere.
fn visit_containers(value: &mut Value, f: &mut dyn FnMut(&mut Map<String, Value>)) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if matches!(
                    key.as_str(),
                    "containers" | "initContainers" | "ephemeralContainers"
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

/// Splits an image into (name, tag, digest) the way kustomize matches `images` entries:
/// `localhost:5000/app:1.0` is (`localhost:5000/app`, `1.0`, none).
pub fn split_image(image: &str) -> (&str, Option<&str>, Option<&str>) {
    let (rest, digest) = match image.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (image, None),
    };
    let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
    match rest[last_slash..].rfind(':') {
        Some(colon) => {
            let colon = last_slash + colon;
            (&rest[..colon], Some(&rest[colon + 1..]), digest)
        }
        None => (rest, None, digest),
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
    kind: &'static str,
    /// Namespace to look the object up in, when the field says (binding subjects).
    namespace: Option<String>,
    /// The field sits beside a `namespace` that follows the named object (binding subjects).
    namespace_follows: bool,
}

/// Rewrites every reference to an object that was renamed during the build.
fn fix_name_references(resources: &mut [Resource]) {
    let scopes = Scopes::from_objects(resources.iter().map(|r| &r.object));
    for i in 0..resources.len() {
        let references = references_of(&resources[i].object.value);
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
            let cluster_scoped = scopes.is_cluster_scoped("", reference.kind);
            // A reference names the object as the referrer knew it: compare with every
            // (name, namespace) the object has had, or its current namespace.
            let candidates: Vec<&Resource> = resources
                .iter()
                .filter(|r| r.object.kind() == reference.kind && r.known_as(&current))
                .filter(|r| {
                    cluster_scoped
                        || same_namespace(r.object.namespace(), &namespace)
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
            kind,
            namespace: None,
            namespace_follows: false,
        })
    };
    for (kind, pointer) in pod_references(object) {
        add(pointer, kind);
    }
    match kind {
        "StatefulSet" => add("/spec/serviceName".into(), "Service"),
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
                        kind: "ServiceAccount",
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
    fn image_split_handles_registry_ports_and_digests() {
        assert_eq!(split_image("nginx"), ("nginx", None, None));
        assert_eq!(split_image("nginx:1.2"), ("nginx", Some("1.2"), None));
        assert_eq!(
            split_image("localhost:5000/app:1.0"),
            ("localhost:5000/app", Some("1.0"), None)
        );
        assert_eq!(
            split_image("localhost:5000/app"),
            ("localhost:5000/app", None, None)
        );
        assert_eq!(
            split_image("a.io/app@sha256:abc"),
            ("a.io/app", None, Some("sha256:abc"))
        );
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

    #[test]
    fn literal_quotes_are_stripped_once() {
        assert_eq!(strip_quotes("\"a b\""), "a b");
        assert_eq!(strip_quotes("'x'"), "x");
        assert_eq!(strip_quotes("\"x"), "\"x");
    }
}
