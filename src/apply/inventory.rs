//! What Flotilla applied to one member cluster, kept in that cluster (ConfigMap
//! `flotilla-system/inventory-<name>`) so that a restarted agent, or another machine, still
//! prunes correctly.

use std::collections::BTreeMap;

use http::StatusCode;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::member::{Member, RequestError};
use super::{FIELD_MANAGER, apply_query};
use crate::object::{ObjectRef, split_api_version};

/// The namespace that holds inventories in every member cluster.
pub const INVENTORY_NAMESPACE: &str = "flotilla-system";
const DATA_KEY: &str = "inventory.json";

/// One applied object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// `apiVersion` it was applied with.
    pub api_version: String,
    /// Its kind.
    pub kind: String,
    /// Its namespace, empty when cluster-scoped.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// sha256 of the body Flotilla last applied.
    pub hash: String,
    /// The uid the apiserver gave it: an object with another uid is not the one Flotilla applied.
    pub uid: String,
    /// Whether Flotilla's apply created it; an object that existed before is never pruned.
    pub created: bool,
    /// Written before an apply that may create the object (it was absent then), so that a
    /// crash between the create and the inventory write still leaves it prunable: the next
    /// sync resolves it with [`resolve_pending`] before anything else. `hash` and `uid` are
    /// empty while pending.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
}

impl Entry {
    /// The object this entry is about.
    pub fn object_ref(&self) -> ObjectRef {
        let (group, version) = split_api_version(&self.api_version);
        ObjectRef {
            group: group.to_string(),
            version: version.to_string(),
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

/// The stored form.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    /// sha256 over every entry's object and hash: equal sets of applied objects, equal hash.
    set_hash: String,
    objects: Vec<Entry>,
}

/// The inventory of one cluster, by object.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Inventory {
    /// Entries by object (the version is not part of the key).
    pub entries: BTreeMap<ObjectRef, Entry>,
}

/// The inventory could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The apiserver did not answer.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The apiserver refused.
    #[error("{action} ConfigMap {INVENTORY_NAMESPACE}/{name}: {status}: {message}")]
    Refused {
        /// What was being done.
        action: &'static str,
        /// The ConfigMap's name.
        name: String,
        /// The answer's code.
        status: StatusCode,
        /// The answer's message.
        message: String,
    },
    /// The stored inventory is not what Flotilla writes; nothing is pruned until it is fixed.
    #[error("ConfigMap {INVENTORY_NAMESPACE}/{name}: data.{DATA_KEY}: {problem}")]
    Corrupt {
        /// The ConfigMap's name.
        name: String,
        /// What is wrong.
        problem: String,
    },
}

impl InventoryError {
    /// Whether reading or writing again can help: not for an inventory Flotilla cannot read
    /// (someone must fix it), nor for a write the apiserver finds invalid.
    pub fn is_retryable(&self) -> bool {
        match self {
            InventoryError::Request(error) => error.is_retryable(),
            InventoryError::Refused { status, .. } => super::is_retryable_status(*status),
            InventoryError::Corrupt { .. } => false,
        }
    }

    /// A fixed name for this error, fit for a metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            InventoryError::Request(error) => error.kind(),
            InventoryError::Refused { .. } => "refused",
            InventoryError::Corrupt { .. } => "corrupt",
        }
    }
}

/// The ConfigMap name of the inventory of the sync named `sync_name`.
pub fn config_map_name(sync_name: &str) -> String {
    format!("inventory-{sync_name}")
}

/// What a pending entry becomes once the object is looked at: Flotilla's create happened when
/// the object now exists with Flotilla's inventory label of this sync (it was absent when the
/// entry was written, so nobody else's object got that label from Flotilla's apply); otherwise
/// (absent, or labelled by someone else) the entry is dropped. `None`: drop.
pub fn resolve_pending(
    pending: &Entry,
    live: Option<&serde_json::Value>,
    sync_name: &str,
) -> Option<Entry> {
    let live = live?;
    let label = live
        .pointer(&format!(
            "/metadata/labels/{}",
            super::INVENTORY_LABEL.replace('/', "~1")
        ))
        .and_then(serde_json::Value::as_str);
    let uid = live
        .pointer("/metadata/uid")
        .and_then(serde_json::Value::as_str)?;
    (label == Some(sync_name) && !uid.is_empty()).then(|| Entry {
        // Unknown: the next apply sends the object again and records what it sent.
        hash: String::new(),
        uid: uid.to_string(),
        created: true,
        pending: false,
        ..pending.clone()
    })
}

impl Inventory {
    /// Whether some entries are still pending (a sync died, or its inventory write failed).
    pub fn has_pending(&self) -> bool {
        self.entries.values().any(|entry| entry.pending)
    }

    /// sha256 over the sorted (object, hash) pairs.
    pub fn set_hash(&self) -> String {
        let mut hasher = Sha256::new();
        for entry in self.entries.values() {
            for part in [
                &entry.api_version,
                &entry.kind,
                &entry.namespace,
                &entry.name,
                &entry.hash,
            ] {
                hasher.update(part.as_bytes());
                hasher.update([0]);
            }
        }
        hex(&hasher.finalize())
    }

    /// Reads the inventory from the cluster; `None` when there is none yet.
    pub async fn load(member: &Member, sync_name: &str) -> Result<Option<Self>, InventoryError> {
        let name = config_map_name(sync_name);
        let path = format!("/api/v1/namespaces/{INVENTORY_NAMESPACE}/configmaps/{name}");
        let Some(reply) = member.get(&path).await? else {
            return Ok(None);
        };
        if !reply.status.is_success() {
            return Err(InventoryError::Refused {
                action: "reading",
                name,
                status: reply.status,
                message: reply.message(),
            });
        }
        let config_map = reply.json();
        let Some(data) = config_map
            .pointer(&format!("/data/{}", DATA_KEY.replace('/', "~1")))
            .and_then(|data| data.as_str())
        else {
            return Err(InventoryError::Corrupt {
                name,
                problem: "missing".into(),
            });
        };
        let stored: Stored =
            serde_json::from_str(data).map_err(|error| InventoryError::Corrupt {
                name: name.clone(),
                problem: error.to_string(),
            })?;
        Ok(Some(Inventory {
            entries: stored
                .objects
                .into_iter()
                .map(|entry| (entry.object_ref(), entry))
                .collect(),
        }))
    }

    /// Creates the inventories' namespace (server-side apply: harmless when it exists).
    pub async fn ensure_namespace(member: &Member) -> Result<(), InventoryError> {
        let namespace = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": INVENTORY_NAMESPACE},
        });
        let path = format!(
            "/api/v1/namespaces/{INVENTORY_NAMESPACE}?{}",
            apply_query(false)
        );
        let reply = member
            .apply_patch(&path, namespace.to_string().as_bytes())
            .await?;
        if !reply.status.is_success() {
            return Err(InventoryError::Refused {
                action: "creating the namespace of",
                name: INVENTORY_NAMESPACE.into(),
                status: reply.status,
                message: reply.message(),
            });
        }
        Ok(())
    }

    /// Writes the inventory with server-side apply, creating its namespace when missing.
    /// Returns the number of write requests sent.
    pub async fn store(&self, member: &Member, sync_name: &str) -> Result<usize, InventoryError> {
        let name = config_map_name(sync_name);
        let stored = Stored {
            set_hash: self.set_hash(),
            objects: self.entries.values().cloned().collect(),
        };
        let data = serde_json::to_string(&stored).map_err(|error| InventoryError::Corrupt {
            name: name.clone(),
            problem: error.to_string(),
        })?;
        let config_map = serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "namespace": INVENTORY_NAMESPACE,
                "labels": {"app.kubernetes.io/managed-by": FIELD_MANAGER},
            },
            "data": {DATA_KEY: data},
        });
        let path = format!(
            "/api/v1/namespaces/{INVENTORY_NAMESPACE}/configmaps/{name}?{}",
            apply_query(false)
        );
        let body = config_map.to_string();
        let mut writes = 1;
        let mut reply = member.apply_patch(&path, body.as_bytes()).await?;
        if reply.status == StatusCode::NOT_FOUND {
            // Its namespace is missing (deleted since, or this is the first sync).
            Inventory::ensure_namespace(member).await?;
            reply = member.apply_patch(&path, body.as_bytes()).await?;
            writes += 2;
        }
        if !reply.status.is_success() {
            return Err(InventoryError::Refused {
                action: "writing",
                name,
                status: reply.status,
                message: reply.message(),
            });
        }
        Ok(writes)
    }
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
