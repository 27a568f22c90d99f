//! kustomize v5.5.0's build: resources, bases and components, generators (and Helm charts,
//! `helm`), patches, the field transformers, `configurations`, `replacements`, `vars` and
//! the built-in plugin configs, with kustomize's order and name references.
//! What Flotilla does not build (remote bases, external plugins, `crds`, `openapi`, ...) is
//! refused by name with the reason, never silently ignored.
//!
//! A build runs like kustomize's `accumulateTarget`: each kustomization accumulates its
//! resources (building its bases first), reads its `configurations`, runs its generators,
//! its components (on everything gathered so far), then its transformers in kustomize's fixed
//! order. Only the top-level build adds content hashes to generated names, rewrites the
//! references to renamed objects (every level's renames are known by then) and resolves vars.
//!
//! This file tells that story ([`build`], then `accumulate`); each step lives in a module of
//! its own:
//!
//! | module | concern |
//! |---|---|
//! | `file` | the kustomization file: its fields, how it is read, what is refused |
//! | `resources` | objects during a build, and gathering resources, bases and components |
//! | `field_specs` | where transformers write: kustomize's tables and `configurations` files |
//! | `generators` | `configMapGenerator`, `secretGenerator` and `helmCharts` |
//! | `patches` | `patches`, `patchesStrategicMerge` and `patchesJson6902` |
//! | `transformers` | namespace, name prefix/suffix, labels, annotations, replicas, images |
//! | `replacements`, `vars` | copying fields between objects |
//! | `plugins` | built-in generators and transformers configured as objects |
//! | `names` | content-hash suffixes and references to renamed objects |

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use super::load::Repo;
use super::{RenderError, kustomization_file};
use crate::object::{Object, map_at_path};
use field_specs::TransformerConfig;
use file::read_kustomization;
use names::{add_name_hashes, fix_name_references};
use resources::{Resource, check_kind, enter_kustomization};

// One module per step of the build; they share `Level` (defined here, so every step can add
// methods to it) and each other's types at `pub(super)`, never wider.
mod field_specs;
mod file;
mod generators;
mod names;
mod patches;
mod plugins;
mod replacements;
mod resources;
mod transformers;
mod vars;

pub use names::content_hash;

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
    // Find the file; refuse a cycle or nesting deeper than --max-depth.
    let file = enter_kustomization(repo, dir, stack)?;
    let kustomization = read_kustomization(repo, &file)?;
    check_kind(&kustomization, role, &file)?;
    let mut build = Level {
        repo,
        dir,
        file: &file,
        resources: accumulated.resources,
        config: accumulated.config,
    };

    // Resources and bases, each base fully built first, then the `configurations`.
    build.gather_resources(&kustomization, stack, declared_vars)?;
    build.read_configurations(&kustomization.configurations)?;

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
    build.inflate_helm_charts(&kustomization)?;
    build.run_plugin_configs(&kustomization.generators, "generators")?;
    // Components after the generators, before the transformers (kustomize's accumulateTarget):
    // each runs on everything gathered so far, generated objects included.
    build.add_components(&kustomization.components, stack, declared_vars)?;
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

    /// Reads a file named in the kustomization, relative to its directory.
    fn read_relative(&self, reference: &str) -> Result<(PathBuf, String), RenderError> {
        let path = self.repo.resolve(self.dir, reference, self.file)?;
        let text = self.repo.read_to_string(&path)?;
        Ok((path, text))
    }
}

/// kustomize's objects pass through JSON (`map[string]interface{}`), where a number is a
/// float64 written without a fraction when it has none: `1.0` and `1e3` come out as `1` and
/// `1000`. Helm values that kustomize merges pass through it too.
pub(crate) fn whole_floats_as_integers(value: &mut Value) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `files` to a temporary repository and builds its root kustomization.
    pub(super) fn build_tree(files: &[(&str, &str)]) -> Result<Vec<Object>, RenderError> {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            crate::render::tests::write(dir.path(), path, text);
        }
        let repo = Repo::open(dir.path()).unwrap();
        build(&repo, Path::new("."))
    }
}
