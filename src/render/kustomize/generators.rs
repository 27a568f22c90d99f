//! Generators: `configMapGenerator` and `secretGenerator` (from literals, files and env files,
//! with `behavior: create | merge | replace`), and the objects `helmCharts` inflate. Generated
//! objects get their content-hash suffix at the top of the build (`names`).

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::file::Kustomization;
use super::{Level, Resource};
use crate::object::{Object, Origin};
use crate::render::RenderError;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct GeneratorArgs {
    pub(super) name: String,
    pub(super) namespace: Option<String>,
    pub(super) behavior: Option<String>,
    #[serde(default)]
    pub(super) literals: Vec<String>,
    #[serde(default)]
    pub(super) files: Vec<String>,
    #[serde(default)]
    pub(super) envs: Vec<String>,
    pub(super) env: Option<String>,
    #[serde(rename = "type")]
    pub(super) secret_type: Option<String>,
    #[serde(default)]
    pub(super) options: GeneratorOptions,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct GeneratorOptions {
    #[serde(default)]
    pub(super) labels: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) annotations: BTreeMap<String, String>,
    pub(super) disable_name_suffix_hash: Option<bool>,
    pub(super) immutable: Option<bool>,
}
impl Level<'_> {
    /// Runs generators of one kind (`ConfigMap`, `Secret`); `field` names the list for errors.
    pub(super) fn generate(
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

    /// Inflates the kustomization's `helmCharts` (see `render::helm`) and adds their objects.
    pub(super) fn inflate_helm_charts(
        &mut self,
        kustomization: &Kustomization,
    ) -> Result<(), RenderError> {
        let inflated = crate::render::helm::inflate_charts(
            self.repo,
            self.dir,
            self.file,
            &kustomization.helm_charts,
            kustomization.helm_globals.as_ref(),
        )?;
        self.append(
            inflated
                .into_iter()
                .map(|object| Resource {
                    generator: Some("HelmChartInflationGenerator"),
                    ..Resource::new(object)
                })
                .collect(),
        )
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::kustomize::tests::build_tree;

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
    fn literal_quotes_are_stripped_once() {
        assert_eq!(strip_quotes("\"a b\""), "a b");
        assert_eq!(strip_quotes("'x'"), "x");
        assert_eq!(strip_quotes("\"x"), "\"x");
    }
}
