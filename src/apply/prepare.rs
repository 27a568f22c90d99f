//! Preparing a planned object for one apiserver: the inventory label, the forms an old
//! apiserver needs, the namespace its scope gives it, its hash and its URL.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::member::{self, Member, RequestError, Resource};
use super::{FIELD_MANAGER, INVENTORY_LABEL, inventory};
use crate::kinds;
use crate::object::{Object, ObjectRef, landing_namespace};

/// The query of a server-side apply.
pub fn apply_query(dry_run: bool) -> String {
    let mut query = format!("fieldManager={FIELD_MANAGER}&force=true");
    if dry_run {
        query.push_str("&dryRun=All");
    }
    query
}

/// The apply wave of an object: [`crate::kinds::apply_wave`], where the apiserver says the
/// kind's scope (a custom kind's is unknown until its CRD is served).
pub(super) fn wave(object_ref: &ObjectRef, resource: Option<&Resource>) -> u8 {
    let cluster_scoped = resource.is_some_and(|resource| !resource.namespaced);
    kinds::apply_wave(&object_ref.group, &object_ref.kind, cluster_scoped)
}

/// A planned object, ready to send.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Where it goes: once its kind is known, a namespaced object without a namespace goes to
    /// `default`, as with kubectl.
    pub object_ref: ObjectRef,
    /// The apply body, as compact JSON: a sync of thousands of objects holds strings, not
    /// JSON trees.
    pub body: String,
    /// sha256 of the body.
    pub hash: String,
    /// How the API serves it, when known yet (custom resources wait for their CRD).
    pub resource: Option<Resource>,
}

/// Adds what the apply step adds to a planned object: the inventory label and, when
/// `legacy_forms` (an apiserver before 1.22, see [`Member::needs_legacy_forms`]), the forms
/// that Kubernetes 1.20's server-side apply needs and older clients always sent: the defaults
/// of list-map keys it refuses to find missing ("associative list with keys has an element
/// that omits key field"), as Flux does, and resource quantities as strings (it refuses
/// `gpu: 1` with "expected string"). `render` output stays what Git says.
pub fn prepare_body(object: &Value, sync_name: &str, legacy_forms: bool) -> Value {
    let mut body = object.clone();
    if let Some(metadata) = body.get_mut("metadata").and_then(Value::as_object_mut) {
        let labels = metadata
            .entry("labels")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(labels) = labels.as_object_mut() {
            labels.insert(INVENTORY_LABEL.into(), Value::String(sync_name.into()));
        }
    }
    if legacy_forms {
        add_legacy_forms(&mut body);
    }
    body
}

/// The 1.20 forms of [`prepare_body`].
fn add_legacy_forms(body: &mut Value) {
    let text = |field: &str| {
        body.get(field)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let (kind, api_version) = (text("kind"), text("apiVersion"));
    let (kind, api_version) = (kind.as_str(), api_version.as_str());
    if api_version == "v1" && kind == "Service" {
        default_protocols(body.pointer_mut("/spec/ports"), "port");
    }
    if let Some(pointer) = kinds::workload_of(body).map(|workload| workload.pod_spec)
        && let Some(pod_spec) = body.pointer_mut(pointer)
    {
        for containers in ["containers", "initContainers", "ephemeralContainers"] {
            for container in pod_spec
                .get_mut(containers)
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                default_protocols(container.get_mut("ports"), "containerPort");
                quantities_as_strings(container.pointer_mut("/resources/limits"));
                quantities_as_strings(container.pointer_mut("/resources/requests"));
            }
        }
        quantities_as_strings(pod_spec.get_mut("overhead"));
    }
    let claims: Vec<&mut Value> = match (api_version, kind) {
        ("v1", "PersistentVolumeClaim") => body.get_mut("spec").into_iter().collect(),
        ("apps/v1", "StatefulSet") => body
            .pointer_mut("/spec/volumeClaimTemplates")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
            .filter_map(|template| template.get_mut("spec"))
            .collect(),
        _ => Vec::new(),
    };
    for claim in claims {
        quantities_as_strings(claim.pointer_mut("/resources/requests"));
        quantities_as_strings(claim.pointer_mut("/resources/limits"));
    }
    if (api_version, kind) == ("v1", "ResourceQuota") {
        quantities_as_strings(body.pointer_mut("/spec/hard"));
    }
}

/// Turns the numbers of a map of resource quantities into strings (`1` -> `"1"`).
fn quantities_as_strings(quantities: Option<&mut Value>) {
    for value in quantities
        .and_then(Value::as_object_mut)
        .into_iter()
        .flat_map(|map| map.values_mut())
    {
        if let Value::Number(number) = value {
            *value = Value::String(number.to_string());
        }
    }
}

/// Sets `protocol: TCP` on each port entry that has its key but no protocol.
fn default_protocols(ports: Option<&mut Value>, key: &str) {
    for port in ports
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
    {
        if port.contains_key(key) && !port.contains_key("protocol") {
            port.insert("protocol".into(), Value::String("TCP".into()));
        }
    }
}

pub(super) fn content_hash(body: &str) -> String {
    inventory::hex(&Sha256::digest(body.as_bytes()))
}

impl Member {
    /// Prepares a planned object for this cluster: body, hash, and how the API serves it.
    pub async fn prepare(
        &self,
        object: &Object,
        sync_name: &str,
    ) -> Result<Prepared, RequestError> {
        let mut object_ref = object.object_ref();
        let legacy_forms = self.needs_legacy_forms().await?;
        let mut body = prepare_body(&object.value, sync_name, legacy_forms);
        let resource = self.resource(object.api_version(), object.kind()).await?;
        fix_namespace(&mut object_ref, &mut body, resource.as_ref());
        let body = body.to_string();
        let hash = content_hash(&body);
        Ok(Prepared {
            object_ref,
            body,
            hash,
            resource,
        })
    }
}

/// A namespaced object without a namespace goes to `default`; a cluster-scoped one has none
/// ([`landing_namespace`], with the scope the apiserver serves).
pub(super) fn fix_namespace(
    object_ref: &mut ObjectRef,
    body: &mut Value,
    resource: Option<&Resource>,
) {
    let Some(resource) = resource else { return };
    let Some(metadata) = body.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    if fix_ref_namespace(object_ref, resource) {
        if object_ref.namespace.is_empty() {
            metadata.remove("namespace");
        } else {
            metadata.insert(
                "namespace".into(),
                Value::String(object_ref.namespace.clone()),
            );
        }
    }
}

/// The reference half of [`fix_namespace`]; true when it changed the namespace.
pub(super) fn fix_ref_namespace(object_ref: &mut ObjectRef, resource: &Resource) -> bool {
    let landing = landing_namespace(&object_ref.namespace, !resource.namespaced);
    if landing == object_ref.namespace {
        return false;
    }
    object_ref.namespace = landing.to_string();
    true
}

/// The URL of one object.
pub(super) fn object_path(object_ref: &ObjectRef, resource: &Resource) -> String {
    format!(
        "{}/{}",
        member::collection_path(&object_ref.api_version(), resource, &object_ref.namespace),
        object_ref.name
    )
}
