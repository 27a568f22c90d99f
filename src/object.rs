//! Kubernetes objects as Flotilla carries them between stages: a JSON tree plus where it came
//! from, so every later error can name the file and document that produced the object.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;
use serde_json::{Map, Value};

/// Where an object was written: a file of the fleet repo, or made by Flotilla itself.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Origin {
    /// Path relative to the repository root, with `/` separators.
    pub path: PathBuf,
    /// 1-based index of the YAML document within the file (0 for generated objects).
    pub document: usize,
    /// 1-based line where the document starts (0 when unknown).
    pub line: usize,
}

impl Origin {
    /// An origin for an object generated from the given file (generators, created namespaces).
    pub fn generated(path: impl Into<PathBuf>) -> Self {
        Origin {
            path: path.into(),
            document: 0,
            line: 0,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.document, self.line) {
            (0, _) => write!(f, "{} (generated)", self.path.display()),
            (doc, 0) => write!(f, "{}: document {doc}", self.path.display()),
            (doc, line) => write!(f, "{}:{line}: document {doc}", self.path.display()),
        }
    }
}

/// The identity of an object in a cluster: group, version, kind, namespace and name.
///
/// Equality ignores the version, as the API server does: `apps/v1` and `apps/v1beta1`
/// Deployments with one name are the same object.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ObjectRef {
    /// API group, empty for the core group.
    pub group: String,
    /// API version within the group.
    pub version: String,
    /// Kind, e.g. `Deployment`.
    pub kind: String,
    /// Namespace, empty for cluster-scoped objects or when not set.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

impl ObjectRef {
    /// `apiVersion` as written in manifests (`v1`, `apps/v1`).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Whether this ref, as a template names it, is the object `placed` in a cluster: the same
    /// object, where a template without a namespace lands in `default` (as with kubectl).
    pub fn is_placed_as(&self, placed: &ObjectRef) -> bool {
        self.group == placed.group
            && self.kind == placed.kind
            && self.name == placed.name
            && (self.namespace == placed.namespace
                || (self.namespace.is_empty() && placed.namespace == DEFAULT_NAMESPACE))
    }

    fn key(&self) -> (&str, &str, &str, &str) {
        (&self.group, &self.kind, &self.namespace, &self.name)
    }
}

impl PartialEq for ObjectRef {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for ObjectRef {}
impl PartialOrd for ObjectRef {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ObjectRef {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}
impl std::hash::Hash for ObjectRef {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state)
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        };
        if self.namespace.is_empty() {
            write!(f, "{kind}/{}", self.name)
        } else {
            write!(f, "{kind} {}/{}", self.namespace, self.name)
        }
    }
}

/// Splits `apiVersion` into group and version (`apps/v1` -> (`apps`, `v1`), `v1` -> (``, `v1`)).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", api_version),
    }
}

/// One Kubernetes object and its origin.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// The object as a JSON tree (a map with `apiVersion`, `kind`, `metadata`, ...).
    pub value: Value,
    /// The file and document it came from.
    pub origin: Origin,
}

impl Object {
    /// Wraps a JSON tree that is known to be a mapping.
    pub fn new(value: Value, origin: Origin) -> Self {
        Object { value, origin }
    }

    /// The string at a path of keys, empty when missing. (Not `Value::pointer`: it allocates
    /// per segment, and these accessors run in every comparison of a build.)
    fn str_at(&self, path: &[&str]) -> &str {
        path.iter()
            .try_fold(&self.value, |value, key| value.get(key))
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// `apiVersion`, empty when missing.
    pub fn api_version(&self) -> &str {
        self.str_at(&["apiVersion"])
    }

    /// `kind`, empty when missing.
    pub fn kind(&self) -> &str {
        self.str_at(&["kind"])
    }

    /// `metadata.name`, empty when missing.
    pub fn name(&self) -> &str {
        self.str_at(&["metadata", "name"])
    }

    /// `metadata.namespace`, empty when missing.
    pub fn namespace(&self) -> &str {
        self.str_at(&["metadata", "namespace"])
    }

    /// The API group (empty for the core group).
    pub fn group(&self) -> &str {
        split_api_version(self.api_version()).0
    }

    /// Group, version and kind, owned (for matching while the object is changed).
    pub fn group_version_kind(&self) -> (String, String, String) {
        let (group, version) = split_api_version(self.api_version());
        (group.into(), version.into(), self.kind().into())
    }

    /// The identity of the object.
    pub fn object_ref(&self) -> ObjectRef {
        let (group, version) = split_api_version(self.api_version());
        ObjectRef {
            group: group.to_string(),
            version: version.to_string(),
            kind: self.kind().to_string(),
            namespace: self.namespace().to_string(),
            name: self.name().to_string(),
        }
    }

    /// `metadata.labels` as string pairs (non-string values are skipped).
    pub fn labels(&self) -> impl Iterator<Item = (&str, &str)> {
        string_pairs(self.value.pointer("/metadata/labels"))
    }

    /// `metadata.annotations` as string pairs.
    pub fn annotations(&self) -> impl Iterator<Item = (&str, &str)> {
        string_pairs(self.value.pointer("/metadata/annotations"))
    }

    /// The mutable `metadata` map, created when missing.
    pub fn metadata_mut(&mut self) -> &mut Map<String, Value> {
        let root = ensure_map(&mut self.value);
        ensure_map(
            root.entry("metadata")
                .or_insert_with(|| Value::Object(Map::new())),
        )
    }

    /// Sets `metadata.name`.
    pub fn set_name(&mut self, name: &str) {
        self.metadata_mut()
            .insert("name".into(), Value::String(name.into()));
    }

    /// Sets `metadata.namespace`.
    pub fn set_namespace(&mut self, namespace: &str) {
        self.metadata_mut()
            .insert("namespace".into(), Value::String(namespace.into()));
    }
}

fn string_pairs(value: Option<&Value>) -> impl Iterator<Item = (&str, &str)> {
    value
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|m| m.iter())
        .filter_map(|(k, v)| v.as_str().map(|v| (k.as_str(), v)))
}

/// Returns the map inside `value`, replacing any non-map value with an empty map first.
pub fn ensure_map(value: &mut Value) -> &mut Map<String, Value> {
    if !value.is_object() {
        *value = Value::Object(Map::new());
    }
    match value {
        Value::Object(map) => map,
        _ => unreachable!("just made an object"),
    }
}

/// Walks `path` from `value`, creating maps along the way, and returns the map at its end.
pub fn map_at_path<'a>(value: &'a mut Value, path: &[&str]) -> &'a mut Map<String, Value> {
    let mut current = value;
    for key in path {
        current = ensure_map(current)
            .entry(key.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    ensure_map(current)
}

/// The pod spec of a workload kind, as a JSON pointer, matched by kind alone as kustomize's
/// field specs match (render's name references); elsewhere use [`crate::kinds::workload`].
pub fn pod_spec_pointer(kind: &str) -> Option<&'static str> {
    crate::kinds::workload_by_kind(kind).map(|workload| workload.pod_spec)
}

/// Every field of a workload's pod spec that names another object of its namespace, as
/// (kind named, JSON pointer of the name field): ServiceAccounts, image pull Secrets, volume
/// ConfigMaps / Secrets / PVCs, and container env and envFrom references. Pointers are given
/// for the list entries present; a pointer's last fields may be absent.
pub fn pod_references(object: &Value) -> Vec<(&'static str, String)> {
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    let Some(pod) = pod_spec_pointer(kind) else {
        return Vec::new();
    };
    let Some(spec) = object.pointer(pod) else {
        return Vec::new();
    };
    let entries = |value: Option<&Value>| value.and_then(Value::as_array).map_or(0, Vec::len);
    let mut refs = vec![
        ("ServiceAccount", format!("{pod}/serviceAccountName")),
        ("ServiceAccount", format!("{pod}/serviceAccount")),
    ];
    for i in 0..entries(spec.get("imagePullSecrets")) {
        refs.push(("Secret", format!("{pod}/imagePullSecrets/{i}/name")));
    }
    for (i, volume) in spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let base = format!("{pod}/volumes/{i}");
        refs.push(("ConfigMap", format!("{base}/configMap/name")));
        refs.push(("Secret", format!("{base}/secret/secretName")));
        refs.push((
            "PersistentVolumeClaim",
            format!("{base}/persistentVolumeClaim/claimName"),
        ));
        for j in 0..entries(volume.pointer("/projected/sources")) {
            refs.push((
                "ConfigMap",
                format!("{base}/projected/sources/{j}/configMap/name"),
            ));
            refs.push((
                "Secret",
                format!("{base}/projected/sources/{j}/secret/name"),
            ));
        }
    }
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        for (c, container) in spec
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let base = format!("{pod}/{list}/{c}");
            for e in 0..entries(container.get("env")) {
                refs.push((
                    "ConfigMap",
                    format!("{base}/env/{e}/valueFrom/configMapKeyRef/name"),
                ));
                refs.push((
                    "Secret",
                    format!("{base}/env/{e}/valueFrom/secretKeyRef/name"),
                ));
            }
            for e in 0..entries(container.get("envFrom")) {
                refs.push(("ConfigMap", format!("{base}/envFrom/{e}/configMapRef/name")));
                refs.push(("Secret", format!("{base}/envFrom/{e}/secretRef/name")));
            }
        }
    }
    refs
}

/// Whether an API group belongs to Kubernetes itself (so its lists have merge keys). Groups
/// defined by CRDs always contain a dot and never end in `.k8s.io`.
pub fn is_builtin_group(group: &str) -> bool {
    !group.contains('.') || group.ends_with(".k8s.io")
}

/// Kinds that are cluster-scoped in Kubernetes itself. Custom kinds are looked up from the
/// CRDs in the fleet repo; anything else is taken as namespaced.
pub const BUILTIN_CLUSTER_SCOPED_KINDS: &[&str] = &[
    "APIService",
    "CertificateSigningRequest",
    "ClusterRole",
    "ClusterRoleBinding",
    "ComponentStatus",
    "CSIDriver",
    "CSINode",
    "CustomResourceDefinition",
    "FlowSchema",
    "IngressClass",
    "MutatingWebhookConfiguration",
    "Namespace",
    "Node",
    "PersistentVolume",
    "PodSecurityPolicy",
    "PriorityClass",
    "PriorityLevelConfiguration",
    "RuntimeClass",
    "StorageClass",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "ValidatingWebhookConfiguration",
    "VolumeAttachment",
];

/// The namespace of a namespaced object that names none, as kubectl and the apiserver's
/// clients default it.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The namespace an object lands in: none when its kind is cluster-scoped (whatever it
/// names), else its own, or [`DEFAULT_NAMESPACE`] when it names none. Placement asks with the
/// scopes the repo says ([`Scopes`]), apply with those the apiserver serves.
pub fn landing_namespace(namespace: &str, cluster_scoped: bool) -> &str {
    if cluster_scoped {
        ""
    } else if namespace.is_empty() {
        DEFAULT_NAMESPACE
    } else {
        namespace
    }
}

/// Knows which kinds are cluster-scoped: Kubernetes' own plus those of the repo's CRDs.
#[derive(Debug, Clone, Default)]
pub struct Scopes {
    cluster_scoped_custom: std::collections::BTreeSet<(String, String)>,
    namespaced_custom: std::collections::BTreeSet<(String, String)>,
}

impl Scopes {
    /// Learns the scopes of the custom kinds defined by CRDs among `objects`.
    pub fn from_objects<'a>(objects: impl IntoIterator<Item = &'a Object>) -> Self {
        let mut scopes = Scopes::default();
        for object in objects {
            if object.kind() != "CustomResourceDefinition" {
                continue;
            }
            let spec = object.value.get("spec");
            let group = spec
                .and_then(|s| s.get("group"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let kind = spec
                .and_then(|s| s.pointer("/names/kind"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let key = (group.to_string(), kind.to_string());
            match spec.and_then(|s| s.get("scope")).and_then(Value::as_str) {
                Some("Cluster") => scopes.cluster_scoped_custom.insert(key),
                _ => scopes.namespaced_custom.insert(key),
            };
        }
        scopes
    }

    /// Whether objects of this group and kind live outside namespaces.
    pub fn is_cluster_scoped(&self, group: &str, kind: &str) -> bool {
        let key = (group.to_string(), kind.to_string());
        if self.cluster_scoped_custom.contains(&key) {
            return true;
        }
        if self.namespaced_custom.contains(&key) {
            return false;
        }
        BUILTIN_CLUSTER_SCOPED_KINDS.contains(&kind)
    }

    /// The namespace `object` lands in ([`landing_namespace`] with its kind's scope).
    pub fn landing_namespace<'a>(&self, object: &'a Object) -> &'a str {
        landing_namespace(
            object.namespace(),
            self.is_cluster_scoped(object.group(), object.kind()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn object_ref_ignores_version_in_equality() {
        let a = Object::new(
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}}),
            Origin::generated("a.yaml"),
        );
        let mut b = a.clone();
        b.value["apiVersion"] = json!("apps/v1beta1");
        assert_eq!(a.object_ref(), b.object_ref());
        assert_eq!(a.object_ref().to_string(), "Deployment.apps/x");
    }

    #[test]
    fn crd_scope_overrides_builtin_guess() {
        let crd = Object::new(
            json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                   "metadata": {"name": "widgets.example.com"},
                   "spec": {"group": "example.com", "scope": "Cluster", "names": {"kind": "Widget"}}}),
            Origin::generated("crd.yaml"),
        );
        let scopes = Scopes::from_objects([&crd]);
        assert!(scopes.is_cluster_scoped("example.com", "Widget"));
        assert!(!scopes.is_cluster_scoped("example.com", "Gadget"));
        assert!(scopes.is_cluster_scoped("", "Namespace"));
        assert!(!scopes.is_cluster_scoped("apps", "Deployment"));
    }

    #[test]
    fn namespaced_objects_land_in_theirs_or_default_cluster_scoped_in_none() {
        assert_eq!(landing_namespace("", false), "default");
        assert_eq!(landing_namespace("web", false), "web");
        assert_eq!(landing_namespace("web", true), "");
        let role = Object::new(
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                   "metadata": {"name": "r", "namespace": "web"}}),
            Origin::generated("role.yaml"),
        );
        assert_eq!(Scopes::default().landing_namespace(&role), "");
    }
}
