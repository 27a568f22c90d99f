//! Names at the top of a build: kustomize's content-hash suffix on generated ConfigMaps and
//! Secrets ([`content_hash`]), then every field that names an object renamed during the build
//! (by a prefix, a suffix, a hash or a namespace) rewritten to its final name.

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::field_specs::{NameReference, pointers_at};
use super::resources::{
    Resource, kustomize_cluster_scoped, kustomize_cluster_scoped_kind, same_namespace,
};
use crate::object::{pod_references, pod_spec_pointer};
use crate::render::RenderError;

/// Appends kustomize's content hash to generated ConfigMaps and Secrets.
pub(super) fn add_name_hashes(resources: &mut [Resource]) -> Result<(), RenderError> {
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
pub(super) fn fix_name_references(resources: &mut [Resource], configured: &[NameReference]) {
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
}
