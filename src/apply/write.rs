//! Server-side apply: the waves of a sync, one object's apply, and the wait for a new CRD.

use std::collections::BTreeMap;
use std::time::Duration;

use backon::Retryable;
use futures::stream::StreamExt;
use http::StatusCode;
use serde_json::{Value, json};

use super::inventory::{Entry, Inventory};
use super::member::{Member, RequestError};
use super::prepare::{Prepared, content_hash, fix_namespace, object_path, wave};
use super::{ClusterReport, ObjectError, ObjectProblem, SyncOptions, apply_query};
use crate::object::ObjectRef;

/// How long a CRD may take to become Established before its custom resources are given up.
const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a new CRD is looked at until it is Established and served (until
/// [`ESTABLISH_TIMEOUT`]): it usually is within a few hundred milliseconds.
const ESTABLISH_POLL: backon::ConstantBuilder = backon::ConstantBuilder::new()
    .with_delay(Duration::from_millis(50))
    .without_max_times();

/// Applies `objects` wave by wave; records results in `report` and `next`.
pub(super) async fn apply_in_waves(
    member: &Member,
    objects: Vec<Prepared>,
    previous: &Inventory,
    next: &mut Inventory,
    report: &mut ClusterReport,
    options: &SyncOptions,
) {
    let mut waves: BTreeMap<u8, Vec<Prepared>> = BTreeMap::new();
    for object in objects {
        waves
            .entry(wave(&object.object_ref, object.resource.as_ref()))
            .or_default()
            .push(object);
    }
    for (wave, objects) in waves {
        let results: Vec<(Prepared, Result<Applied, ApplyFailure>)> =
            futures::stream::iter(objects.into_iter().map(|object| async move {
                let result = apply_one(member, &object, false).await;
                (object, result)
            }))
            .buffer_unordered(options.concurrency.max(1))
            .collect()
            .await;
        tracing::debug!(cluster = %member.name, wave, objects = results.len(), "wave applied");
        let mut established = Vec::new();
        for (object, result) in results {
            match result {
                Ok(applied) => {
                    report.writes += 1;
                    let object_ref = applied.object_ref;
                    let created = applied.created
                        || previous
                            .entries
                            .get(&object_ref)
                            .is_some_and(|entry| entry.created && entry.uid == applied.uid);
                    next.entries.insert(
                        object_ref.clone(),
                        Entry {
                            api_version: object_ref.api_version(),
                            kind: object_ref.kind.clone(),
                            namespace: object_ref.namespace.clone(),
                            name: object_ref.name.clone(),
                            hash: applied.hash,
                            uid: applied.uid,
                            created,
                            pending: false,
                        },
                    );
                    if wave == 0 {
                        established.push(object_ref.name.clone());
                    }
                    report.applied.push(object_ref);
                }
                Err(failure) => {
                    report.writes += usize::from(failure.sent);
                    report
                        .failed
                        .push(ObjectProblem::failed(object.object_ref, &failure.error))
                }
            }
        }
        for crd in established {
            if let Err(error) = member.wait_established(&crd).await {
                let object = ObjectRef {
                    group: "apiextensions.k8s.io".into(),
                    version: "v1".into(),
                    kind: "CustomResourceDefinition".into(),
                    namespace: String::new(),
                    name: crd,
                };
                report.failed.push(ObjectProblem::failed(object, &error));
            }
        }
    }
}

/// Why one apply failed.
#[derive(Debug)]
pub struct ApplyFailure {
    /// Why.
    pub error: ObjectError,
    /// Whether the request reached the apiserver (it counts as a write sent).
    pub sent: bool,
}

impl ApplyFailure {
    fn unsent(error: ObjectError) -> Self {
        ApplyFailure { error, sent: false }
    }
}

/// The result of one server-side apply.
#[derive(Debug)]
pub struct Applied {
    /// Where it went (a custom resource's namespace is known only once its kind is served).
    pub object_ref: ObjectRef,
    /// sha256 of the body sent.
    pub hash: String,
    /// Whether the apply created the object (201).
    pub created: bool,
    /// The object's uid.
    pub uid: String,
    /// The object as the apiserver returned it, for a dry-run (else `Null`).
    pub live: Value,
}

#[derive(serde::Deserialize)]
pub(super) struct UidList {
    /// `null` in an empty metadata list.
    #[serde(default)]
    pub(super) items: Option<Vec<UidOnly>>,
}

/// An item of a list, as far as a sync reads it.
#[derive(serde::Deserialize)]
pub(super) struct UidOnly {
    pub(super) metadata: UidOnlyMetadata,
}

/// Its metadata.
#[derive(serde::Deserialize)]
pub(super) struct UidOnlyMetadata {
    #[serde(default)]
    pub(super) uid: String,
    #[serde(default)]
    pub(super) name: String,
}

/// Server-side applies one object (dry-run when asked).
pub async fn apply_one(
    member: &Member,
    object: &Prepared,
    dry_run: bool,
) -> Result<Applied, ApplyFailure> {
    let resolved;
    let resolved_here = object.resource.is_none();
    let (object_ref, body, resource) = match &object.resource {
        Some(resource) => (&object.object_ref, &object.body, resource.clone()),
        None => {
            // A custom resource whose CRD came in this sync: discover it now.
            let api_version = object.object_ref.api_version();
            match member.resource(&api_version, &object.object_ref.kind).await {
                Ok(Some(resource)) => {
                    let mut object_ref = object.object_ref.clone();
                    let mut body: Value = serde_json::from_str(&object.body)
                        .map_err(|error| ApplyFailure::unsent(ObjectError::Body(error)))?;
                    fix_namespace(&mut object_ref, &mut body, Some(&resource));
                    resolved = (object_ref, body.to_string());
                    (&resolved.0, &resolved.1, resource)
                }
                Ok(None) => {
                    return Err(ApplyFailure::unsent(ObjectError::NotServed {
                        api_version,
                        kind: object.object_ref.kind.clone(),
                    }));
                }
                Err(error) => return Err(ApplyFailure::unsent(error.into())),
            }
        }
    };
    let path = format!(
        "{}?{}",
        object_path(object_ref, &resource),
        apply_query(dry_run)
    );
    let hash = if resolved_here {
        content_hash(body)
    } else {
        object.hash.clone()
    };
    let reply = if dry_run {
        member.apply_patch(&path, body.as_bytes()).await
    } else {
        member
            .apply_patch_for_metadata(&path, body.as_bytes())
            .await
    }
    .map_err(|error| ApplyFailure {
        // An overloaded apiserver did answer: the request was sent.
        sent: matches!(error, RequestError::Overloaded { .. }),
        error: error.into(),
    })?;
    if !reply.status.is_success() {
        return Err(ApplyFailure {
            error: ObjectError::Answered {
                status: reply.status,
                message: reply.message(),
            },
            sent: true,
        });
    }
    // A sync needs only the uid: reading just that keeps a sync of thousands of objects from
    // building a JSON tree per answer.
    let (uid, live) = if dry_run {
        let live = reply.json();
        let uid = live.pointer("/metadata/uid").and_then(Value::as_str);
        (uid.unwrap_or_default().to_string(), live)
    } else {
        let uid = serde_json::from_slice::<UidOnly>(&reply.body)
            .map(|answer| answer.metadata.uid)
            .unwrap_or_default();
        (uid, Value::Null)
    };
    Ok(Applied {
        object_ref: object_ref.clone(),
        hash,
        created: reply.status == StatusCode::CREATED,
        uid,
        live,
    })
}

impl Member {
    /// Waits until a CRD is Established and discovery lists its kind in every served version,
    /// so that its custom resources, applied next, are found.
    async fn wait_established(&self, crd: &str) -> Result<(), ObjectError> {
        /// Why one look at the CRD did not end the wait.
        enum Waiting {
            /// Not Established or not served yet: look again.
            NotYet,
            /// The CRD could not be read (after the request's own retries): give up.
            Failed(RequestError),
        }
        let path = format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd}");
        let deadline = tokio::time::Instant::now() + ESTABLISH_TIMEOUT;
        let look = || async {
            let reply = self.get(&path).await.map_err(Waiting::Failed)?;
            match reply.map(|reply| reply.json()) {
                Some(crd) if is_established(&crd) && self.serves_every_version(&crd).await => {
                    Ok(())
                }
                _ => Err(Waiting::NotYet),
            }
        };
        look.retry(ESTABLISH_POLL)
            .sleep(tokio::time::sleep)
            .when(|waiting| {
                matches!(waiting, Waiting::NotYet) && tokio::time::Instant::now() <= deadline
            })
            .await
            .map_err(|waiting| match waiting {
                Waiting::Failed(error) => error.into(),
                Waiting::NotYet => ObjectError::NotEstablished {
                    seconds: ESTABLISH_TIMEOUT.as_secs(),
                },
            })
    }

    /// Whether discovery lists the CRD's kind in each version it serves.
    async fn serves_every_version(&self, crd: &Value) -> bool {
        let group = crd.pointer("/spec/group").and_then(Value::as_str);
        let kind = crd.pointer("/spec/names/kind").and_then(Value::as_str);
        let (Some(group), Some(kind)) = (group, kind) else {
            return false;
        };
        for version in crd
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|version| version.get("served") == Some(&json!(true)))
            .filter_map(|version| version.get("name").and_then(Value::as_str))
        {
            let api_version = format!("{group}/{version}");
            if !matches!(self.resource(&api_version, kind).await, Ok(Some(_))) {
                return false;
            }
        }
        true
    }
}

fn is_established(crd: &Value) -> bool {
    crd.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|condition| {
            condition.get("type") == Some(&json!("Established"))
                && condition.get("status") == Some(&json!("True"))
        })
}
