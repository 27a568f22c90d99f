//! Patches: `patchesStrategicMerge`, and `patches` / `patchesJson6902` entries (a file or an
//! inline patch, strategic merge or RFC 6902, applied to the objects a target selects). Built-in
//! kinds merge by their list keys (`render::merge`); other kinds merge without a schema.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::Level;
use super::resources::same_namespace;
use crate::labels::{matches_all, parse_label_selector};
use crate::object::{Object, Origin, is_builtin_group, split_api_version};
use crate::render::RenderError;
use crate::render::load::{Dialect, parse_documents_with};
use crate::render::merge::{schemaless_merge, strategic_merge};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct PatchEntry {
    pub(super) path: Option<String>,
    pub(super) patch: Option<String>,
    pub(super) target: Option<Target>,
    pub(super) options: Option<BTreeMap<String, bool>>,
}

/// Which objects a patch applies to; names and namespaces are anchored regular expressions.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct Target {
    pub(super) group: Option<String>,
    pub(super) version: Option<String>,
    pub(super) kind: Option<String>,
    pub(super) name: Option<String>,
    pub(super) namespace: Option<String>,
    pub(super) label_selector: Option<String>,
    pub(super) annotation_selector: Option<String>,
}
impl Level<'_> {
    pub(super) fn patch_strategic_merge(&mut self, patches: &[String]) -> Result<(), RenderError> {
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

    pub(super) fn patch(&mut self, entries: &[PatchEntry], list: &str) -> Result<(), RenderError> {
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

    pub(super) fn selected(&self, target: &Target, field: &str) -> Result<Vec<usize>, RenderError> {
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
    pub(super) fn apply_merge_patch(
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
                        problem: problem.to_string(),
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

    pub(super) fn apply_json_patch(
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
}

fn string_map<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> BTreeMap<String, String> {
    pairs.map(|(k, v)| (k.to_string(), v.to_string())).collect()
}
#[cfg(test)]
mod tests {
    use crate::render::kustomize::tests::build_tree;

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
}
