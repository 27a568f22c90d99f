//! Drift: managed objects changed or deleted in a member cluster behind Flotilla's back.
//!
//! Every kind Flotilla manages in a cluster is watched (by the inventory label). A change is
//! drift when a field Flotilla set is now owned by another field manager: server-side apply
//! moves a field's ownership to whoever changes it (`kubectl scale`, `kubectl set image`,
//! `kubectl edit`), so `managedFields` says which field changed and who changed it, with no
//! extra request. Fields Flotilla does not set (status, replicas an HPA owns when Git omits
//! them, fields other managers own) are never drift. A deleted managed object is drift too.
//!
//! One write leaves no trace there on older apiservers: Kubernetes 1.20 does not record a write
//! through the scale subresource (`kubectl scale`) in managedFields. So the live value of
//! `spec.replicas`, when Flotilla owns it, is compared as well; the worker then checks it
//! against what Flotilla applied, so its own apply is never taken for drift.
//!
//! The watches that feed it live in [`crate::cluster::watch`]; this module only says what
//! counts as drift, for them and for the check at start in [`crate::apply`].

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;
use serde_json::Value;

use crate::apply::{FIELD_MANAGER, Prepared};
use crate::object::ObjectRef;

/// What to do about drift. Spelled `correct` or `report` on the command line, in `/status` and
/// by [`FromStr`](std::str::FromStr) / [`Display`](std::fmt::Display).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DriftMode {
    /// Re-apply the object.
    Correct,
    /// Only report it.
    Report,
}

impl DriftMode {
    /// Every mode, in the order `--help` lists them.
    pub const ALL: [DriftMode; 2] = [DriftMode::Correct, DriftMode::Report];

    /// The mode's name: `correct` or `report`.
    pub fn name(self) -> &'static str {
        match self {
            DriftMode::Correct => "correct",
            DriftMode::Report => "report",
        }
    }

    /// What the mode does, one line for `--help`.
    pub fn help(self) -> &'static str {
        match self {
            DriftMode::Correct => "Re-apply the object",
            DriftMode::Report => "Only report it",
        }
    }
}

impl std::fmt::Display for DriftMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A drift mode that is neither `correct` nor `report`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown drift mode {0:?}: expected correct or report")]
pub struct UnknownDriftMode(pub String);

impl std::str::FromStr for DriftMode {
    type Err = UnknownDriftMode;

    /// Exactly the names [`DriftMode::name`] gives (lowercase, as the command line always took
    /// them).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        DriftMode::ALL
            .into_iter()
            .find(|mode| mode.name() == text)
            .ok_or_else(|| UnknownDriftMode(text.to_string()))
    }
}

/// With the value `report`, drift of this object is reported, not corrected.
pub const DRIFT_ANNOTATION: &str = "flotilla.dev/drift";

/// One drifted object.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Drift {
    /// The cluster.
    pub cluster: String,
    /// The object.
    pub object: ObjectRef,
    /// What changed: field paths now owned by someone else, or [`DELETED`].
    pub fields: Vec<String>,
    /// The object was deleted.
    #[serde(skip)]
    pub deleted: bool,
    /// The field managers that own those fields now.
    pub managers: Vec<String>,
    /// Whether the object asks, by annotation, to be reported only.
    #[serde(skip)]
    pub report_only: bool,
    /// The live `spec.replicas` when it is drift only by its value (managedFields did not
    /// record the write), for the worker to compare with what Flotilla applied.
    #[serde(skip)]
    pub replicas_seen: Option<Value>,
    /// Why it was not corrected, when it should have been.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The `fields` of a deletion, as `/status` shows it.
pub const DELETED: &str = "deleted";

impl Drift {
    /// The live `spec.replicas` when that value is all that drifted and managedFields did not
    /// record who wrote it: possibly Flotilla's own apply, for the worker to compare.
    pub fn unrecorded_replicas(&self) -> Option<&Value> {
        self.replicas_seen
            .as_ref()
            .filter(|_| self.fields.len() == 1)
    }
}

/// Joins the keys of a field path. Keys hold `/` and `.` (`f:app.kubernetes.io/name`,
/// `k:{"mountPath":"/data"}`), never this.
const SEP: char = '\u{1f}';

/// Every path of a `fieldsV1` tree, as [`SEP`]-joined keys.
fn field_paths(fields: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    let Some(map) = fields.as_object() else {
        return;
    };
    for (key, child) in map {
        if key == "." {
            continue;
        }
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}{SEP}{key}")
        };
        field_paths(child, &path, out);
        out.insert(path);
    }
}

/// The `fieldsV1` of a manager's entries (all operations), merged into one path set.
fn owned_paths(object: &Value, manager: &str) -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    for entry in object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|entry| entry.get("manager").and_then(Value::as_str) == Some(manager))
    {
        if let Some(fields) = entry.get("fieldsV1") {
            field_paths(fields, "", &mut paths);
        }
    }
    paths
}

/// A path for people: `spec.template.spec.containers[name=web].image`.
fn readable(path: &str) -> String {
    let mut out = String::new();
    for part in path.split(SEP) {
        if let Some(field) = part.strip_prefix("f:") {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(field);
        } else if let Some(key) = part.strip_prefix("k:") {
            let key: BTreeMap<String, Value> = serde_json::from_str(key).unwrap_or_default();
            let key: Vec<String> = key
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().map_or(v.to_string(), str::to_string)))
                .collect();
            out.push_str(&format!("[{}]", key.join(",")));
        } else if let Some(value) = part.strip_prefix("v:") {
            out.push_str(&format!("[{value}]"));
        } else if let Some(index) = part.strip_prefix("i:") {
            out.push_str(&format!("[{index}]"));
        }
    }
    out
}

/// Flotilla's field ownership of an object, as last seen without drift.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Baseline {
    paths: BTreeSet<String>,
    /// The `time` of Flotilla's managedFields entry: it changes only when Flotilla applies.
    applied_at: Option<String>,
    /// The live `spec.replicas`, when Flotilla owns it.
    replicas: Option<Value>,
}

impl Baseline {
    /// Flotilla's ownership in this object.
    pub fn of(object: &Value) -> Self {
        let paths = owned_paths(object, FIELD_MANAGER);
        let replicas = paths
            .contains(&format!("f:spec{SEP}f:replicas"))
            .then(|| object.pointer("/spec/replicas").cloned())
            .flatten();
        Baseline {
            paths,
            applied_at: manager_times(object)
                .into_iter()
                .find(|(manager, _)| manager == FIELD_MANAGER)
                .map(|(_, time)| time),
            replicas,
        }
    }
}

/// (manager, time) of each managedFields entry.
fn manager_times(object: &Value) -> Vec<(String, String)> {
    object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            Some((
                entry.get("manager")?.as_str()?.to_string(),
                entry
                    .get("time")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            ))
        })
        .collect()
}

/// Compares Flotilla's field ownership before and after a change: the fields Flotilla lost,
/// the most specific ones, and the managers responsible. A field lost to another manager is
/// drift; so is a field that vanished while Flotilla did not apply (someone removed it). A
/// field that vanished because Flotilla's own apply no longer sets it is not. Empty when
/// nothing drifted.
pub fn lost_fields(baseline: &Baseline, object: &Value) -> Lost {
    let now = Baseline::of(object);
    let (mut fields, managers) = lost_ownership(baseline, &now, object);
    // `spec.replicas`, which Flotilla still owns, changed while Flotilla did not apply: a
    // write managedFields did not record (1.20's scale subresource), by an unknown author.
    let replicas_seen = (baseline.replicas.is_some()
        && now.applied_at == baseline.applied_at
        && now.replicas != baseline.replicas)
        .then_some(now.replicas)
        .flatten();
    if replicas_seen.is_some() && !fields.iter().any(|f| f == "spec.replicas") {
        fields.push("spec.replicas".into());
    }
    Lost {
        fields,
        managers,
        replicas_seen,
    }
}

/// What [`lost_fields`] found.
#[derive(Debug, Default, PartialEq)]
pub struct Lost {
    /// The most specific field paths Flotilla lost, for people.
    pub fields: Vec<String>,
    /// The field managers that own them now.
    pub managers: Vec<String>,
    /// The live `spec.replicas` when it changed with no managedFields trace.
    pub replicas_seen: Option<Value>,
}

/// The ownership half of [`lost_fields`]; `now` is [`Baseline::of`] the object.
fn lost_ownership(
    baseline: &Baseline,
    now: &Baseline,
    object: &Value,
) -> (Vec<String>, Vec<String>) {
    let current = &now.paths;
    let flotilla_applied_since = now.applied_at != baseline.applied_at;
    let managers_by_path = other_owners(object, false);
    let lost: Vec<&String> = baseline
        .paths
        .difference(current)
        .filter(|path| !flotilla_applied_since || managers_by_path.contains_key(*path))
        .collect();
    // A map Flotilla applied empty that another manager filled (the Deployment controller's
    // revision annotation in `annotations: {}`) moves to that manager, but Flotilla's apply
    // sets no key there, so it has lost nothing; nor have the maps holding it.
    let filled: Vec<&String> = lost
        .iter()
        .copied()
        .filter(|path| filled_empty_map(path, &baseline.paths, object))
        .collect();
    let lost: Vec<&String> = lost
        .into_iter()
        .filter(|path| {
            !filled
                .iter()
                .any(|map| map == path || map.starts_with(&format!("{path}{SEP}")))
        })
        .collect();
    let (leaves, mut managers) = most_specific(&lost, &managers_by_path);
    if managers.is_empty() && !leaves.is_empty() {
        // Removed fields have no owner: name whoever wrote last.
        managers.extend(last_other_writer(object));
    }
    (leaves, managers.into_iter().collect())
}

/// Per field path, the managers other than Flotilla that own it; `skip_status`: not counting
/// writes through the status subresource.
fn other_owners(object: &Value, skip_status: bool) -> HashMap<String, BTreeSet<String>> {
    let mut managers_by_path: HashMap<String, BTreeSet<String>> = HashMap::new();
    for entry in object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(manager) = entry.get("manager").and_then(Value::as_str) else {
            continue;
        };
        let status = entry.get("subresource").and_then(Value::as_str) == Some("status");
        if manager == FIELD_MANAGER || (skip_status && status) {
            continue;
        }
        let mut paths = BTreeSet::new();
        if let Some(fields) = entry.get("fieldsV1") {
            field_paths(fields, "", &mut paths);
        }
        for path in paths {
            managers_by_path
                .entry(path)
                .or_default()
                .insert(manager.to_string());
        }
    }
    managers_by_path
}

/// Whether `path`, a field Flotilla owned nothing below in `baseline`, is a map of fields that
/// now holds something in `object`.
fn filled_empty_map(path: &str, baseline: &BTreeSet<String>, object: &Value) -> bool {
    let below = format!("{path}{SEP}");
    if baseline.iter().any(|owned| owned.starts_with(&below)) {
        return false;
    }
    let mut pointer = String::new();
    for part in path.split(SEP) {
        let Some(field) = part.strip_prefix("f:") else {
            return false;
        };
        pointer.push('/');
        pointer.push_str(&field.replace('~', "~0").replace('/', "~1"));
    }
    object
        .pointer(&pointer)
        .and_then(Value::as_object)
        .is_some_and(|map| !map.is_empty())
}

/// The most specific of `lost` (a path whose child is lost too is dropped), readable, and the
/// managers that own those now.
fn most_specific(
    lost: &[&String],
    managers_by_path: &HashMap<String, BTreeSet<String>>,
) -> (Vec<String>, BTreeSet<String>) {
    let leaves: Vec<&String> = lost
        .iter()
        .filter(|path| {
            !lost
                .iter()
                .any(|other| other.starts_with(&format!("{path}{SEP}")))
        })
        .copied()
        .collect();
    let managers = leaves
        .iter()
        .filter_map(|path| managers_by_path.get(*path))
        .flatten()
        .cloned()
        .collect();
    (leaves.iter().map(|path| readable(path)).collect(), managers)
}

/// The manager other than Flotilla that wrote last.
fn last_other_writer(object: &Value) -> Option<String> {
    manager_times(object)
        .into_iter()
        .filter(|(manager, _)| manager != FIELD_MANAGER)
        .max_by(|a, b| a.1.cmp(&b.1))
        .map(|(manager, _)| manager)
}

/// Drift that happened while no agent watched (it was down): compares the body Flotilla applied
/// (the inventory still has its hash) with the live object. There is no baseline to compare
/// with, so it is [`drift_from_applied`]; `None` when nothing drifted.
pub fn drift_at_start(cluster: &str, applied: &Prepared, live: &Value) -> Option<Drift> {
    let body: Value = serde_json::from_str(&applied.body).ok()?;
    let Lost {
        fields, managers, ..
    } = drift_from_applied(&body, live);
    if fields.is_empty() {
        return None;
    }
    let annotation = live
        .pointer(&format!(
            "/metadata/annotations/{}",
            DRIFT_ANNOTATION.replace('/', "~1")
        ))
        .and_then(Value::as_str);
    Some(Drift {
        cluster: cluster.to_string(),
        object: applied.object_ref.clone(),
        fields,
        deleted: false,
        managers,
        report_only: annotation == Some("report"),
        replicas_seen: None,
        note: None,
    })
}

/// The fields of the body Flotilla applied that the live object lost: a path of the body that
/// another field manager owns and Flotilla no longer does (`kubectl scale`, `set image`,
/// `edit`), or a scalar reached through maps only (`spec.replicas`, labels, annotations,
/// `data` keys) whose live value differs: what Kubernetes 1.20's scale subresource changes
/// with no managedFields trace, and what someone removed. Status (its own subresource) and
/// fields Flotilla does not set are never drift. A value the apiserver writes in another form
/// (a quantity `0.5` stored as `500m`) reads as drift: the correction re-applies the same body,
/// which changes nothing.
pub fn drift_from_applied(applied: &Value, live: &Value) -> Lost {
    let flotilla = owned_paths(live, FIELD_MANAGER);
    let managers_by_path = other_owners(live, true);
    let taken: Vec<&String> = managers_by_path
        .keys()
        .filter(|path| !flotilla.contains(*path) && holds_scalar(applied, path))
        .collect();
    let (taken, mut managers) = most_specific(&taken, &managers_by_path);
    let mut changed = Vec::new();
    changed_scalars(applied, live, &mut Vec::new(), &mut changed);
    if !changed.is_empty() && managers.is_empty() {
        // A changed value with no owner to name: whoever wrote last.
        managers.extend(last_other_writer(live));
    }
    let fields: BTreeSet<String> = taken.into_iter().chain(changed).collect();
    Lost {
        fields: fields.into_iter().collect(),
        managers: managers.into_iter().collect(),
        replicas_seen: None,
    }
}

/// Whether a `fieldsV1` path ([`SEP`]-joined keys) reaches a value (not a map or list) in
/// `body`. Maps and lists are only where values are: an empty `annotations: {}` that Flotilla
/// applied, whose ownership 1.20 does not record once a controller adds a key, is not drift.
fn holds_scalar(body: &Value, path: &str) -> bool {
    let mut at = body;
    for part in path.split(SEP) {
        let next = if let Some(field) = part.strip_prefix("f:") {
            at.get(field)
        } else if let Some(key) = part.strip_prefix("k:") {
            let key: serde_json::Map<String, Value> = serde_json::from_str(key).unwrap_or_default();
            at.as_array().and_then(|items| {
                items.iter().find(|item| {
                    !key.is_empty()
                        && key
                            .iter()
                            .all(|(k, v)| item.get(k).is_some_and(|x| loosely_equal(x, v)))
                })
            })
        } else if let Some(value) = part.strip_prefix("v:") {
            let value: Value = serde_json::from_str(value).unwrap_or(Value::Null);
            at.as_array()
                .and_then(|items| items.iter().find(|item| loosely_equal(item, &value)))
        } else if let Some(index) = part.strip_prefix("i:") {
            index
                .parse::<usize>()
                .ok()
                .and_then(|index| at.as_array()?.get(index))
        } else {
            None
        };
        match next {
            Some(next) => at = next,
            None => return false,
        }
    }
    !(at.is_object() || at.is_array() || at.is_null())
}

/// Equal, or the same text (`1` and `"1"`: 1.20's forms turn numbers into strings).
fn loosely_equal(a: &Value, b: &Value) -> bool {
    let text = |value: &Value| match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    a == b || (a.is_string() != b.is_string() && text(a) == text(b))
}

/// Paths (dotted, for people) of the scalars of `applied` reached through maps only whose
/// value in `live` differs. `stringData` is write-only (the apiserver stores it as `data`).
fn changed_scalars(applied: &Value, live: &Value, at: &mut Vec<String>, out: &mut Vec<String>) {
    let Some(map) = applied.as_object() else {
        return;
    };
    for (key, value) in map {
        let skipped = match at.as_slice() {
            [] => matches!(
                key.as_str(),
                "apiVersion" | "kind" | "stringData" | "status"
            ),
            [metadata] if metadata == "metadata" => matches!(key.as_str(), "name" | "namespace"),
            _ => false,
        };
        if skipped {
            continue;
        }
        let live_value = live.get(key).unwrap_or(&Value::Null);
        match value {
            Value::Object(_) => {
                at.push(key.clone());
                changed_scalars(value, live_value, at, out);
                at.pop();
            }
            Value::Array(_) | Value::Null => {}
            scalar if !loosely_equal(scalar, live_value) => {
                let mut path = at.join(".");
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                out.push(path);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn drift_modes_read_and_print_as_their_lowercase_names() {
        for mode in DriftMode::ALL {
            assert_eq!(mode.to_string().parse::<DriftMode>(), Ok(mode));
            assert_eq!(
                serde_json::to_value(mode).ok(),
                Some(json!(mode.to_string()))
            );
        }
        assert_eq!("report".parse::<DriftMode>(), Ok(DriftMode::Report));
        assert!("Correct".parse::<DriftMode>().is_err(), "case matters");
        assert!("".parse::<DriftMode>().is_err());
    }

    /// An object whose managedFields say Flotilla applied `flotilla` at `applied_at`, and each
    /// other manager wrote its fields later.
    fn object_at(applied_at: &str, flotilla: Value, others: &[(&str, Value)]) -> Value {
        let mut managed = vec![json!({"manager": "flotilla", "operation": "Apply",
                                      "time": applied_at, "fieldsV1": flotilla})];
        for (manager, fields) in others {
            managed.push(json!({"manager": manager, "operation": "Update",
                                "time": "2026-11-22T10:00:00Z", "fieldsV1": fields}));
        }
        json!({"metadata": {"managedFields": managed}})
    }

    fn deployment(flotilla: Value, others: &[(&str, Value)]) -> Value {
        object_at("2026-11-22T09:00:00Z", flotilla, others)
    }

    #[test]
    fn a_scaled_deployment_names_the_field_and_the_manager() {
        let before = deployment(
            json!({"f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {}}}}}}}),
            &[],
        );
        let baseline = Baseline::of(&before);
        let after = deployment(
            json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {}}}}}}}),
            &[("kubectl", json!({"f:spec": {"f:replicas": {}}}))],
        );
        let Lost {
            fields, managers, ..
        } = lost_fields(&baseline, &after);
        assert_eq!(fields, ["spec.replicas"]);
        assert_eq!(managers, ["kubectl"]);
    }

    #[test]
    fn an_empty_map_flotilla_applied_that_a_controller_filled_is_not_drift_in_a_watch() {
        let flotilla = json!({"f:metadata": {"f:annotations": {}, "f:labels": {"f:app": {}}},
                              "f:spec": {"f:replicas": {}}});
        let baseline = Baseline::of(&deployment(flotilla, &[]));
        let mut filled = deployment(
            json!({"f:metadata": {"f:labels": {"f:app": {}}}, "f:spec": {"f:replicas": {}}}),
            &[(
                "kube-controller-manager",
                json!({"f:metadata": {"f:annotations": {".": {},
                    "f:deployment.kubernetes.io/revision": {}}}}),
            )],
        );
        filled["metadata"]["annotations"] = json!({"deployment.kubernetes.io/revision": "1"});
        assert_eq!(lost_fields(&baseline, &filled), Lost::default());
        // Emptied by someone else instead: still drift.
        let mut emptied = filled.clone();
        emptied["metadata"]["annotations"] = json!({});
        assert_eq!(
            lost_fields(&baseline, &emptied).fields,
            ["metadata.annotations"]
        );
    }

    /// With `spec.replicas` set to `replicas`.
    fn with_replicas(mut object: Value, replicas: u64) -> Value {
        object["spec"] = json!({"replicas": replicas});
        object
    }

    #[test]
    fn a_scale_that_managed_fields_did_not_record_is_drift_by_its_value() {
        // Kubernetes 1.20: `kubectl scale` writes through the scale subresource, and
        // managedFields still say Flotilla owns spec.replicas.
        let owned = json!({"f:spec": {"f:replicas": {}}});
        let baseline = Baseline::of(&with_replicas(deployment(owned.clone(), &[]), 4));
        let scaled = with_replicas(deployment(owned.clone(), &[]), 9);
        let Lost {
            fields,
            managers,
            replicas_seen,
        } = lost_fields(&baseline, &scaled);
        assert_eq!(replicas_seen, Some(json!(9)));
        assert_eq!(fields, ["spec.replicas"]);
        assert!(managers.is_empty(), "the writer is unknown: {managers:?}");
        // Flotilla's own apply of a new value changes its entry's time: not drift.
        let applied = with_replicas(object_at("2026-11-22T11:00:00Z", owned.clone(), &[]), 9);
        assert_eq!(lost_fields(&baseline, &applied), Lost::default());
        // Replicas Flotilla does not own (an HPA's) are never compared.
        let unowned = Baseline::of(&with_replicas(deployment(json!({}), &[]), 4));
        assert_eq!(
            lost_fields(&unowned, &with_replicas(deployment(json!({}), &[]), 9)).replicas_seen,
            None
        );
    }

    #[test]
    fn a_changed_image_is_named_by_its_container() {
        let baseline = Baseline::of(&deployment(
            json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {
                    "k:{\"name\":\"web\"}": {".": {}, "f:image": {}}}}}}}),
            &[],
        ));
        let after = deployment(
            json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"web\"}": {".": {}}}}}}}),
            &[(
                "kubectl-set",
                json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {
                    "k:{\"name\":\"web\"}": {"f:image": {}}}}}}}),
            )],
        );
        let Lost {
            fields, managers, ..
        } = lost_fields(&baseline, &after);
        assert_eq!(fields, ["spec.template.spec.containers[name=web].image"]);
        assert_eq!(managers, ["kubectl-set"]);
    }

    #[test]
    fn status_and_fields_flotilla_never_set_are_not_drift() {
        let baseline = Baseline::of(&deployment(json!({"f:spec": {"f:paused": {}}}), &[]));
        let after = deployment(
            json!({"f:spec": {"f:paused": {}}}),
            &[
                (
                    "kube-controller-manager",
                    json!({"f:status": {"f:replicas": {}}}),
                ),
                ("hpa", json!({"f:spec": {"f:replicas": {}}})),
            ],
        );
        assert_eq!(lost_fields(&baseline, &after), Lost::default());
    }

    /// A Deployment as Flotilla applied it: 2 replicas, image `web:1`, a label.
    fn applied_web() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "namespace": "shop",
                            "labels": {"team": "shop", "flotilla.dev/inventory": "prod"}},
               "spec": {"replicas": 2,
                        "template": {"spec": {"containers": [{"name": "web", "image": "web:1"}]}}}})
    }

    /// The live object: Flotilla's managedFields plus `others`, spec from `replicas`/`image`.
    fn live_web(replicas: u64, image: &str, flotilla: Value, others: Value) -> Value {
        let mut managed = vec![json!({"manager": "flotilla", "operation": "Apply",
                                      "time": "2026-11-22T09:00:00Z", "fieldsV1": flotilla})];
        managed.extend(others.as_array().cloned().unwrap_or_default());
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "namespace": "shop", "uid": "u1",
                            "labels": {"team": "shop", "flotilla.dev/inventory": "prod"},
                            "annotations": {"deployment.kubernetes.io/revision": "1"},
                            "managedFields": managed},
               "spec": {"replicas": replicas, "progressDeadlineSeconds": 600,
                        "template": {"spec": {"containers": [
                            {"name": "web", "image": image, "imagePullPolicy": "IfNotPresent"}]}}},
               "status": {"replicas": replicas}})
    }

    fn flotilla_fields(replicas: bool, image: bool) -> Value {
        let mut spec = json!({"f:template": {"f:spec": {"f:containers": {
            "k:{\"name\":\"web\"}": {".": {}, "f:name": {}}}}}});
        if replicas {
            spec["f:replicas"] = json!({});
        }
        if image {
            spec["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"]["f:image"] =
                json!({});
        }
        json!({"f:metadata": {"f:labels": {"f:team": {}, "f:flotilla.dev/inventory": {}}},
               "f:spec": spec})
    }

    /// What the controllers write on every Deployment: never drift.
    fn controllers() -> Value {
        json!([
            {"manager": "kube-controller-manager", "operation": "Update",
             "time": "2026-11-22T09:00:01Z",
             "fieldsV1": {"f:metadata": {"f:annotations": {".": {},
                          "f:deployment.kubernetes.io/revision": {}}}}},
            {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status",
             "time": "2026-11-22T09:00:02Z", "fieldsV1": {"f:status": {"f:replicas": {}}}}
        ])
    }

    #[test]
    fn an_object_as_applied_with_defaults_and_controller_fields_has_not_drifted() {
        let live = live_web(2, "web:1", flotilla_fields(true, true), controllers());
        assert_eq!(drift_from_applied(&applied_web(), &live), Lost::default());
    }

    #[test]
    fn a_scale_while_no_agent_ran_is_drift_by_owner_and_by_value() {
        let mut others = controllers();
        others
            .as_array_mut()
            .expect("list")
            .push(json!({"manager": "kubectl",
            "operation": "Update", "subresource": "scale", "time": "2026-11-22T10:00:00Z",
            "fieldsV1": {"f:spec": {"f:replicas": {}}}}));
        let live = live_web(5, "web:1", flotilla_fields(false, true), others);
        let lost = drift_from_applied(&applied_web(), &live);
        assert_eq!(lost.fields, ["spec.replicas"]);
        assert_eq!(lost.managers, ["kubectl"]);
        // 1.20: the scale subresource leaves no managedFields trace; the value tells.
        let live = live_web(5, "web:1", flotilla_fields(true, true), controllers());
        let lost = drift_from_applied(&applied_web(), &live);
        assert_eq!(lost.fields, ["spec.replicas"]);
        assert_eq!(
            lost.managers,
            ["kube-controller-manager"],
            "the last writer"
        );
    }

    #[test]
    fn a_changed_image_and_a_removed_label_are_drift_at_start() {
        let mut others = controllers();
        others
            .as_array_mut()
            .expect("list")
            .push(json!({"manager": "kubectl-set",
            "operation": "Update", "time": "2026-11-22T10:00:00Z",
            "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"web\"}": {"f:image": {}}}}}}}}));
        let live = live_web(2, "web:2", flotilla_fields(true, false), others);
        let lost = drift_from_applied(&applied_web(), &live);
        assert_eq!(
            lost.fields,
            ["spec.template.spec.containers[name=web].image"]
        );
        assert_eq!(lost.managers, ["kubectl-set"]);

        let mut live = live_web(2, "web:1", flotilla_fields(true, true), controllers());
        live["metadata"]["labels"]
            .as_object_mut()
            .expect("labels")
            .remove("team");
        assert_eq!(
            drift_from_applied(&applied_web(), &live).fields,
            ["metadata.labels.team"]
        );
    }

    #[test]
    fn an_empty_map_flotilla_applied_that_a_controller_filled_is_not_drift() {
        let mut applied = applied_web();
        applied["metadata"]["annotations"] = json!({});
        // 1.20: Flotilla's entry no longer lists `f:annotations`; the controller's does.
        let live = live_web(2, "web:1", flotilla_fields(true, true), controllers());
        assert_eq!(drift_from_applied(&applied, &live), Lost::default());
    }

    #[test]
    fn write_only_and_stringified_values_are_not_drift() {
        let applied = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s"}, "stringData": {"a": "b"}, "data": {"c": "ZA=="},
            "spec": {"n": 1}});
        let live = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s"}, "data": {"a": "Yg==", "c": "ZA=="}, "spec": {"n": "1"}});
        assert_eq!(drift_from_applied(&applied, &live), Lost::default());
    }

    #[test]
    fn a_field_dropped_from_git_is_not_drift() {
        // Flotilla's own next apply no longer sets spec.paused; nobody else owns it.
        let baseline = Baseline::of(&deployment(
            json!({"f:spec": {"f:paused": {}, "f:replicas": {}}}),
            &[],
        ));
        let after = object_at(
            "2026-11-22T11:00:00Z",
            json!({"f:spec": {"f:replicas": {}}}),
            &[],
        );
        assert_eq!(lost_fields(&baseline, &after), Lost::default());
    }

    #[test]
    fn a_field_someone_removed_is_drift_and_keys_with_slashes_read_whole() {
        let baseline = Baseline::of(&deployment(
            json!({"f:metadata": {"f:labels": {"f:app.kubernetes.io/name": {}, "f:team": {}}}}),
            &[],
        ));
        // `kubectl label deployment web team-`: the field is gone, nobody owns it, and
        // Flotilla did not apply.
        let after = deployment(
            json!({"f:metadata": {"f:labels": {"f:app.kubernetes.io/name": {}}}}),
            &[("kubectl-label", json!({}))],
        );
        let Lost {
            fields, managers, ..
        } = lost_fields(&baseline, &after);
        assert_eq!(fields, ["metadata.labels.team"]);
        assert_eq!(managers, ["kubectl-label"]);
        assert_eq!(
            readable(&format!(
                "f:metadata{SEP}f:labels{SEP}f:app.kubernetes.io/name"
            )),
            "metadata.labels.app.kubernetes.io/name"
        );
    }
}
