//! kustomize's built-in generators and transformers configured as objects: the entries of
//! `generators:` and `transformers:` (`apiVersion: builtin`, `kind: LabelTransformer`, ...).
//! Each runs through the same code as the kustomization field it mirrors. External plugins
//! (exec, Go, KRM functions) are refused by name: they would run code from the repository.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::field_specs::{FieldSpecEntry, add_pairs, visit_field_specs};
use super::generators::{GeneratorArgs, GeneratorOptions};
use super::patches::{PatchEntry, Target};
use super::transformers::{ImageEntry, ReplicaEntry};
use super::vars::DeclaredVars;
use super::{Accumulated, Level, Role, accumulate};
use crate::render::RenderError;
use crate::render::load::parse_documents;

/// One built-in plugin configuration: the fields of every kind Flotilla runs, each optional;
/// which ones a kind reads is in [`Level::run_plugin_config`].
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PluginConfig {
    api_version: Option<String>,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: PluginMetadata,
    prefix: Option<String>,
    suffix: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    field_specs: Vec<FieldSpecEntry>,
    unset_only: Option<bool>,
    set_role_binding_subjects: Option<String>,
    image_tag: Option<ImageEntry>,
    replica: Option<ReplicaEntry>,
    path: Option<String>,
    patch: Option<String>,
    target: Option<Target>,
    /// A patch's options (`allowNameChange`...) or a generator's options.
    options: Option<Value>,
    json_op: Option<String>,
    #[serde(default)]
    paths: Vec<String>,
    patches: Option<String>,
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
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PluginMetadata {
    name: Option<String>,
    namespace: Option<String>,
}

impl Level<'_> {
    /// Runs the plugin configurations a `generators:` or `transformers:` list names, in order.
    pub(super) fn run_plugin_configs(
        &mut self,
        entries: &[String],
        list: &str,
    ) -> Result<(), RenderError> {
        for (index, entry) in entries.iter().enumerate() {
            let field = format!("{list}[{index}]");
            for (number, config) in self.plugin_configs(entry, &field)?.into_iter().enumerate() {
                self.run_plugin_config(config, &format!("{field}.document[{}]", number + 1))?;
            }
        }
        Ok(())
    }

    /// The configurations of one entry: inline YAML, a file, or a directory whose
    /// kustomization builds them.
    fn plugin_configs(&self, entry: &str, field: &str) -> Result<Vec<PluginConfig>, RenderError> {
        let invalid = |problem: String| self.error(field, problem);
        let (text, values) = if entry.contains('\n') {
            (entry.to_string(), None)
        } else {
            let path = self.repo.resolve(self.dir, entry, self.file)?;
            if self.repo.absolute(&path).is_dir() {
                let built = accumulate(
                    self.repo,
                    &path,
                    &mut Vec::new(),
                    &mut DeclaredVars::default(),
                    Role::Kustomization,
                    Accumulated::default(),
                )?;
                let values = built.resources.into_iter().map(|r| r.object.value);
                (String::new(), Some(values.collect::<Vec<_>>()))
            } else {
                (self.repo.read_to_string(&path)?, None)
            }
        };
        match values {
            Some(values) => values
                .into_iter()
                .map(|value| serde_json::from_value(value).map_err(|e| invalid(e.to_string())))
                .collect(),
            None => {
                // Checked as YAML first, for an error with a line number.
                parse_documents(&text, self.file)?;
                serde_saphyr::from_multiple_with_options::<PluginConfig>(
                    &text,
                    crate::render::load::yaml_options(crate::render::load::Dialect::Kustomize),
                )
                .map_err(|e| invalid(e.to_string().lines().next().unwrap_or("").to_string()))
            }
        }
    }

    fn run_plugin_config(&mut self, config: PluginConfig, field: &str) -> Result<(), RenderError> {
        let kind = config.kind.as_str();
        if config.api_version.as_deref() != Some("builtin") {
            return Err(self.error(
                field,
                format!(
                    "{kind:?} with apiVersion {:?}: only kustomize's built-in plugins \
                     (apiVersion: builtin) run here; external plugins are not supported",
                    config.api_version.as_deref().unwrap_or("")
                ),
            ));
        }
        match kind {
            "ConfigMapGenerator" | "SecretGenerator" => {
                let options: GeneratorOptions = self.options(&config, field)?;
                let args = GeneratorArgs {
                    name: config.metadata.name.clone().unwrap_or_default(),
                    namespace: config.metadata.namespace.clone(),
                    behavior: config.behavior,
                    literals: config.literals,
                    files: config.files,
                    envs: config.envs,
                    env: config.env,
                    secret_type: config.secret_type,
                    options,
                };
                let generated = kind.trim_end_matches("Generator");
                self.generate(&[args], generated, &GeneratorOptions::default(), field)
            }
            "PrefixSuffixTransformer" => {
                if let Some(spec) = config
                    .field_specs
                    .iter()
                    .find(|s| s.path != "metadata/name")
                {
                    return Err(self.error(
                        format!("{field}.fieldSpecs"),
                        format!("path {:?}: only metadata/name is supported", spec.path),
                    ));
                }
                self.add_affixes_where(
                    config.prefix.as_deref().unwrap_or(""),
                    config.suffix.as_deref().unwrap_or(""),
                    &config.field_specs,
                );
                Ok(())
            }
            "LabelTransformer" | "AnnotationsTransformer" => {
                let pairs = config.labels.or(config.annotations).unwrap_or_default();
                for resource in &mut self.resources {
                    visit_field_specs(&mut resource.object, &config.field_specs, &mut |slot| {
                        add_pairs(slot, &pairs)
                    });
                }
                Ok(())
            }
            "NamespaceTransformer" => {
                match config.set_role_binding_subjects.as_deref() {
                    None | Some("defaultOnly") => {}
                    Some(other) => {
                        return Err(self.error(
                            format!("{field}.setRoleBindingSubjects"),
                            format!("{other:?}: only defaultOnly is supported"),
                        ));
                    }
                }
                let Some(namespace) = config.metadata.namespace.as_deref() else {
                    return Err(self.error(format!("{field}.metadata.namespace"), "missing"));
                };
                self.set_namespace_where(
                    namespace,
                    config.unset_only.unwrap_or(false),
                    &config.field_specs,
                );
                Ok(())
            }
            "ImageTagTransformer" => {
                let Some(image) = config.image_tag else {
                    return Err(self.error(format!("{field}.imageTag"), "missing"));
                };
                // The plugin writes its own field specs only, not kustomize's defaults.
                self.set_image_with(&image, &config.field_specs);
                Ok(())
            }
            "ReplicaCountTransformer" => {
                let Some(replica) = config.replica else {
                    return Err(self.error(format!("{field}.replica"), "missing"));
                };
                for resource in &mut self.resources {
                    if resource.known_as(&replica.name) {
                        visit_field_specs(&mut resource.object, &config.field_specs, &mut |slot| {
                            *slot = Value::from(replica.count);
                        });
                    }
                }
                Ok(())
            }
            "PatchTransformer" | "PatchJson6902Transformer" => {
                let options = match kind {
                    "PatchTransformer" => Some(self.options(&config, field)?),
                    _ => None,
                };
                let entry = PatchEntry {
                    path: config.path,
                    patch: config.patch.or(config.json_op),
                    target: config.target,
                    options,
                };
                self.patch(&[entry], field)
            }
            "PatchStrategicMergeTransformer" => {
                let patches: Vec<String> = config.paths.into_iter().chain(config.patches).collect();
                self.patch_strategic_merge(&patches)
            }
            other => Err(self.error(
                format!("{field}.kind"),
                format!(
                    "{other:?} is not a built-in plugin Flotilla runs (ConfigMapGenerator, \
                     SecretGenerator, PrefixSuffixTransformer, LabelTransformer, \
                     AnnotationsTransformer, NamespaceTransformer, ImageTagTransformer, \
                     ReplicaCountTransformer, PatchTransformer, PatchJson6902Transformer, \
                     PatchStrategicMergeTransformer)"
                ),
            )),
        }
    }

    /// A configuration's `options`, as the type its kind reads.
    fn options<T: serde::de::DeserializeOwned + Default>(
        &self,
        config: &PluginConfig,
        field: &str,
    ) -> Result<T, RenderError> {
        match &config.options {
            None => Ok(T::default()),
            Some(options) => serde_json::from_value(options.clone())
                .map_err(|e| self.error(format!("{field}.options"), e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::build_tree;

    #[test]
    fn external_and_unknown_plugins_are_refused_by_name() {
        let external =
            "apiVersion: someteam.example.com/v1\nkind: ChartInflator\nmetadata: {name: x}\n";
        let error = build_tree(&[
            ("kustomization.yaml", "generators: [plugin.yaml]\n"),
            ("plugin.yaml", external),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("generators[0].document[1]")
                && error.contains("external plugins are not supported"),
            "{error}"
        );
        let unknown = "apiVersion: builtin\nkind: HashTransformer\nmetadata: {name: x}\n";
        let error = build_tree(&[
            ("kustomization.yaml", "transformers: [t.yaml]\n"),
            ("t.yaml", unknown),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            error.contains(
                "transformers[0].document[1].kind: \"HashTransformer\" is not a built-in plugin"
            ),
            "{error}"
        );
    }
}
