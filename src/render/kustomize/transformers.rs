//! The field transformers, in the order a kustomization runs them: `namespace`,
//! `namePrefix` / `nameSuffix`, `commonLabels` and `labels`, `commonAnnotations`, `replicas`
//! and `images`. Where each writes is kustomize's table (`field_specs`) plus what
//! `configurations` files add.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};

use super::Level;
use super::field_specs::{
    ANNOTATION_TEMPLATE_SPECS, FieldSpec, FieldSpecEntry, LABEL_SELECTOR_SPECS,
    LABEL_TEMPLATE_SPECS, set_pairs, visit_containers, visit_field_specs,
};
use super::file::Kustomization;
use super::resources::kustomize_cluster_scoped;
use crate::image::kustomize_split;
use crate::object::{map_at_path, split_api_version};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct LabelsEntry {
    #[serde(default)]
    pub(super) pairs: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) include_selectors: bool,
    #[serde(default)]
    pub(super) include_templates: bool,
    #[serde(default)]
    pub(super) fields: Vec<FieldSpecEntry>,
}
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct ImageEntry {
    pub(super) name: String,
    pub(super) new_name: Option<String>,
    pub(super) new_tag: Option<String>,
    pub(super) digest: Option<String>,
    /// Appended to the image's tag when neither `newTag` nor `digest` is given.
    pub(super) tag_suffix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct ReplicaEntry {
    pub(super) name: String,
    pub(super) count: i64,
}
impl Level<'_> {
    pub(super) fn set_namespace(&mut self, namespace: &str) {
        // `configurations` may name more namespace fields (kubebuilder's webhook
        // clientConfig.service.namespace); kustomize's `namespace` writes those too.
        let specs = self.config.namespace.clone();
        self.set_namespace_where(namespace, false, &specs);
    }

    /// Sets the namespace of every namespaced object (with `unset_only`, of those without one),
    /// and at the other fields `specs` name (in any object they apply to, cluster-scoped too).
    pub(super) fn set_namespace_where(
        &mut self,
        namespace: &str,
        unset_only: bool,
        specs: &[FieldSpecEntry],
    ) {
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

    pub(super) fn add_affixes(&mut self, prefix: &str, suffix: &str) {
        self.add_affixes_where(prefix, suffix, &[]);
    }

    /// Adds a name prefix and suffix to the objects `specs` select (all when empty).
    pub(super) fn add_affixes_where(
        &mut self,
        prefix: &str,
        suffix: &str,
        specs: &[FieldSpecEntry],
    ) {
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

    pub(super) fn add_labels(&mut self, k: &Kustomization) {
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

    pub(super) fn add_annotations(&mut self, annotations: &BTreeMap<String, String>) {
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

    pub(super) fn set_replicas(&mut self, replicas: &[ReplicaEntry]) {
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

    pub(super) fn set_images(&mut self, images: &[ImageEntry]) {
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
#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::render::kustomize::tests::build_tree;

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
}
