//! `vars`: `$(NAME)` in well-known fields replaced by a field of a named object (kustomize's
//! deprecated but still common var references).
//!
//! As in kustomize v5.5, each kustomization's vars are bound, after its transformers ran, to
//! the one object their `objref` names by any name it has had; vars from every level gather in
//! one set (a name declared twice is an error), and they are expanded once, at the top, after
//! name hashes and name references are final, in the varReference fields only.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::LazyLock;

use serde::Deserialize;
use serde_json::Value;

use super::field_specs::FieldSpecEntry;
use super::resources::{Resource, kustomize_cluster_scoped, same_namespace};
use super::{Level, RenderError};
use crate::error::chain;
use crate::object::split_api_version;
use crate::render::fieldpath;

/// The most fields one object may have expanded; a guard against pathological inputs.
const MAX_EXPANSIONS_PER_OBJECT: usize = 100_000;

/// The most bytes of var values one kustomization's vars may write: a long value referenced
/// in many places multiplies (a 1 MiB value referenced 100,000 times is 100 GiB).
pub const MAX_EXPANDED_BYTES: usize = 64 * 1024 * 1024;

/// One entry of `vars`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VarEntry {
    name: String,
    // Kustomize reads these case-insensitively (Go's encoding/json); accept the usual spellings.
    #[serde(alias = "objRef")]
    objref: ObjRef,
    #[serde(default, alias = "fieldRef")]
    fieldref: FieldRef,
}

/// The object a var reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ObjRef {
    #[serde(alias = "apiversion")]
    api_version: Option<String>,
    group: Option<String>,
    version: Option<String>,
    kind: Option<String>,
    name: String,
    namespace: Option<String>,
}

/// The field a var reads; `metadata.name` when absent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldRef {
    #[serde(rename = "fieldPath", alias = "fieldpath")]
    field_path: Option<String>,
}

impl ObjRef {
    /// (group, version), from `apiVersion` when set (kustomize's `Target.GVK`).
    fn group_version(&self) -> (String, String) {
        match self.api_version.as_deref().filter(|v| !v.is_empty()) {
            Some(api_version) => {
                let (group, version) = split_api_version(api_version);
                (group.to_string(), version.to_string())
            }
            None => (
                self.group.clone().unwrap_or_default(),
                self.version.clone().unwrap_or_default(),
            ),
        }
    }
}

/// A var as declared, with where.
#[derive(Debug, Clone)]
struct Declared {
    var: VarEntry,
    /// The kustomization file that declared it.
    file: PathBuf,
    /// `vars[i]` in that file.
    field: String,
}

/// Every var declared in a build, over all its kustomizations.
#[derive(Debug, Default)]
pub struct DeclaredVars {
    vars: Vec<Declared>,
}

impl Level<'_> {
    /// Declares a kustomization's `vars`: binds each to the object its objref names (by any id
    /// the object has had) and adds it to the build's set.
    pub(super) fn declare_vars(
        &mut self,
        entries: &[VarEntry],
        declared: &mut DeclaredVars,
    ) -> Result<(), RenderError> {
        if entries.is_empty() {
            return Ok(());
        }
        for (index, var) in entries.iter().enumerate() {
            let field = format!("vars[{index}]");
            if declared.vars.iter().any(|d| d.var.name == var.name) {
                return Err(self.error(field, format!("var '{}' already encountered", var.name)));
            }
            let (group, version) = var.objref.group_version();
            let kind = var.objref.kind.clone().unwrap_or_default();
            let namespace = var.objref.namespace.clone().unwrap_or_default();
            // Kustomize compares namespaces only when the objref names one or the kind is
            // cluster-scoped.
            let api_version = if group.is_empty() {
                version.clone()
            } else {
                format!("{group}/{version}")
            };
            let compare_namespace =
                !namespace.is_empty() || kustomize_cluster_scoped(&api_version, &kind);
            let matched: Vec<usize> = self
                .resources
                .iter()
                .enumerate()
                .filter(|(_, resource)| {
                    let object = &resource.object;
                    let (object_group, object_version) = split_api_version(object.api_version());
                    object_group == group
                        && object_version == version
                        && object.kind() == kind
                        && resource.identities().any(|(name, ns)| {
                            name == var.objref.name
                                && (!compare_namespace || same_namespace(ns, &namespace))
                        })
                })
                .map(|(i, _)| i)
                .collect();
            match matched.as_slice() {
                [] => {}
                [one] => self.resources[*one].var_names.push(var.name.clone()),
                many => {
                    return Err(self.error(
                        field,
                        format!(
                            "found {} resId matches for var '{}' (unable to disambiguate)",
                            many.len(),
                            var.name
                        ),
                    ));
                }
            }
            declared.vars.push(Declared {
                var: var.clone(),
                file: self.file.to_path_buf(),
                field,
            });
        }
        Ok(())
    }
}

impl DeclaredVars {
    /// Expands `$(NAME)` for every declared var in the fields `specs` names (kustomize's
    /// varReference config; [`builtin_var_references`] unless configurations add more).
    pub(super) fn resolve(
        &self,
        resources: &mut [Resource],
        specs: &[FieldSpecEntry],
    ) -> Result<(), RenderError> {
        let mut values: BTreeMap<&str, Value> = BTreeMap::new();
        // Kustomize looks vars up in name order; the first failure is the one reported.
        let mut ordered: Vec<&Declared> = self.vars.iter().collect();
        ordered.sort_by(|a, b| a.var.name.cmp(&b.var.name));
        for declared in ordered {
            values.insert(&declared.var.name, declared.value(resources)?);
        }
        if values.is_empty() {
            return Ok(());
        }
        let mut bytes_left = MAX_EXPANDED_BYTES;
        for resource in resources.iter_mut() {
            let object = &mut resource.object;
            let (group, version) = split_api_version(object.api_version());
            let (group, version) = (group.to_string(), version.to_string());
            let kind = object.kind().to_string();
            let mut budget = MAX_EXPANSIONS_PER_OBJECT;
            for spec in specs {
                let applies = spec
                    .kind
                    .as_deref()
                    .is_none_or(|k| k.is_empty() || k == kind)
                    && spec
                        .group
                        .as_deref()
                        .is_none_or(|g| g.is_empty() || g == group)
                    && spec
                        .version
                        .as_deref()
                        .is_none_or(|v| v.is_empty() || v == version);
                if !applies {
                    continue;
                }
                let path = split_spec_path(&spec.path);
                let budgets = (&mut budget, &mut bytes_left);
                expand_at(&mut object.value, &path, &values, budgets).map_err(|problem| {
                    RenderError::InvalidObject {
                        origin: object.origin.clone(),
                        field: spec.path.clone(),
                        problem: format!("expanding vars: {problem}"),
                    }
                })?;
            }
        }
        Ok(())
    }
}

impl Declared {
    /// The var's value: its field in the object it was bound to.
    fn value(&self, resources: &[Resource]) -> Result<Value, RenderError> {
        let error = |problem: String| RenderError::Kustomization {
            path: self.file.clone(),
            field: self.field.clone(),
            problem,
        };
        let Some(resource) = resources
            .iter()
            .find(|r| r.var_names.contains(&self.var.name))
        else {
            return Err(error(format!(
                "var '{}' cannot be mapped to a field in the set of known resources",
                self.var.name
            )));
        };
        let path = self
            .var
            .fieldref
            .field_path
            .as_deref()
            .filter(|p| !p.is_empty())
            .unwrap_or("metadata.name");
        let parts = fieldpath::parse(&split_slice_indexes(path))
            .map_err(|e| error(format!("fieldref.fieldPath {path:?}: {}", chain(&e))))?;
        match fieldpath::lookup(&resource.object.value, &parts) {
            Ok(Some(value)) => Ok(value.clone()),
            _ => Err(error(format!(
                "field {path:?} specified in var '{}' not found in {}",
                self.var.name,
                resource.object.object_ref()
            ))),
        }
    }
}

/// Why vars could not be expanded in a field of an object.
#[derive(Debug, thiserror::Error)]
pub enum ExpandError {
    /// A field spec path with an empty part (`spec//x`).
    #[error("cannot set or create an empty field name")]
    EmptyFieldName,
    /// A field spec path leads through a scalar.
    #[error("expected sequence or mapping node")]
    NotListOrMap,
    /// A list at the end of a field spec path holds something other than strings.
    #[error("invalid value type expect a string")]
    NotAString,
    /// The object has more than [`MAX_EXPANSIONS_PER_OBJECT`] fields to expand.
    #[error("too many fields to expand vars in")]
    TooManyFields,
    /// The var values written would pass [`MAX_EXPANDED_BYTES`].
    #[error("vars expand to more than {MAX_EXPANDED_BYTES} bytes in one kustomization")]
    TooLong,
}

/// `ports[0].port` -> `ports.0.port` (kyaml's `convertSliceIndex` before a lookup).
fn split_slice_indexes(path: &str) -> String {
    path.split('.')
        .map(|piece| {
            if let Some(open) = piece.rfind('[')
                && open > 0
                && let Some(digits) = piece[open + 1..].strip_suffix(']')
                && !digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit())
            {
                format!("{}.{digits}", &piece[..open])
            } else {
                piece.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// A field spec path split on `/` (`\/` escapes a slash); `name[]` marks a list and is `name`.
fn split_spec_path(path: &str) -> Vec<String> {
    let parts = fieldpath::split_escaped(path, '/');
    parts
        .into_iter()
        .map(|p| p.strip_suffix("[]").map(str::to_string).unwrap_or(p))
        .collect()
}

/// Walks a field spec path (lists entered element by element, missing fields skipped) and
/// expands vars in the strings found at its end.
/// `budgets`: the fields the object may still have expanded, and the bytes of var values the
/// kustomization may still write.
fn expand_at(
    node: &mut Value,
    path: &[String],
    values: &BTreeMap<&str, Value>,
    budgets: (&mut usize, &mut usize),
) -> Result<(), ExpandError> {
    let Some((first, rest)) = path.split_first() else {
        return expand_leaf(node, values, budgets);
    };
    match node {
        Value::Null => Ok(()),
        Value::Array(items) => {
            for item in items {
                expand_at(item, path, values, (&mut *budgets.0, &mut *budgets.1))?;
            }
            Ok(())
        }
        Value::Object(map) => {
            if first.is_empty() {
                return Err(ExpandError::EmptyFieldName);
            }
            match map.get_mut(first) {
                Some(child) => expand_at(child, rest, values, budgets),
                None => Ok(()),
            }
        }
        _ => Err(ExpandError::NotListOrMap),
    }
}

fn expand_leaf(
    node: &mut Value,
    values: &BTreeMap<&str, Value>,
    (budget, bytes_left): (&mut usize, &mut usize),
) -> Result<(), ExpandError> {
    let mut expand = |text: &mut Value| -> Result<(), ExpandError> {
        *budget = budget.checked_sub(1).ok_or(ExpandError::TooManyFields)?;
        if let Value::String(input) = text {
            *text = expand_vars(input, values, bytes_left)?;
        }
        Ok(())
    };
    match node {
        Value::String(_) => expand(node),
        Value::Object(map) => {
            for value in map.values_mut() {
                if value.is_string() {
                    expand(value)?;
                }
            }
            Ok(())
        }
        Value::Array(items) => {
            for item in items {
                if !item.is_string() {
                    return Err(ExpandError::NotAString);
                }
                expand(item)?;
            }
            Ok(())
        }
        // Numbers, booleans and nulls hold no vars.
        _ => Ok(()),
    }
}

/// Kustomize's `DoReplacements`: `$(NAME)` becomes the var's value, `$$` becomes `$`, and an
/// unknown var (or one whose value is not a scalar) is left as written. A string that is
/// exactly one known `$(NAME)` takes the value with its type (a number stays a number).
/// `bytes_left` is what var values may still write (an error when they would write more).
pub fn expand_vars(
    input: &str,
    values: &BTreeMap<&str, Value>,
    bytes_left: &mut usize,
) -> Result<Value, ExpandError> {
    let mapped = |name: &str| -> Option<&Value> {
        values
            .get(name)
            .filter(|v| matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_)))
    };
    let mut spend = |text: &str| {
        *bytes_left = bytes_left
            .checked_sub(text.len())
            .ok_or(ExpandError::TooLong)?;
        Ok::<(), ExpandError>(())
    };
    if let Some(name) = input.strip_prefix("$(").and_then(|s| s.strip_suffix(')'))
        && !name.contains(')')
        && let Some(value) = mapped(name)
    {
        spend(&display(value))?;
        return Ok(value.clone());
    }
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    // Once a `$(` has no `)` after it, no later one has: not searching again keeps a string of
    // many `$(` linear (each search to the end made it quadratic).
    let mut unclosed = false;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let mut chars = after.chars();
        match chars.next() {
            // A lone `$` at the very end stays.
            None => {
                out.push('$');
                rest = after;
            }
            Some('$') => {
                out.push('$');
                rest = &after[1..];
            }
            Some('(') => match (!unclosed).then(|| after.find(')')).flatten() {
                Some(close) => {
                    let name = &after[1..close];
                    match mapped(name) {
                        Some(value) => {
                            let text = display(value);
                            spend(&text)?;
                            out.push_str(&text);
                        }
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &after[close + 1..];
                }
                None => {
                    unclosed = true;
                    out.push_str("$(");
                    rest = &after[1..];
                }
            },
            Some(other) => {
                out.push('$');
                out.push(other);
                rest = chars.as_str();
            }
        }
    }
    out.push_str(rest);
    Ok(Value::String(out))
}

/// A scalar as Go's `%v` prints it.
fn display(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Number(number) if number.is_f64() => {
            number.as_f64().map(|f| f.to_string()).unwrap_or_default()
        }
        other => other.to_string(),
    }
}

/// Kustomize's built-in varReference field specs (builtinpluginconsts/varreference.go), in
/// its order: where `$(NAME)` is expanded.
pub static BUILTIN_VAR_REFERENCES: LazyLock<Vec<FieldSpecEntry>> = LazyLock::new(|| {
    let container_fields = |kind: &'static str, pod: &str| {
        let mut specs: Vec<(&'static str, String)> = Vec::new();
        for list in ["containers", "initContainers"] {
            for field in ["args", "command", "env/value", "volumeMounts/mountPath"] {
                specs.push((kind, format!("{pod}/{list}/{field}")));
            }
        }
        specs
    };
    let mut specs: Vec<(&'static str, String)> = Vec::new();
    specs.extend(container_fields(
        "CronJob",
        "spec/jobTemplate/spec/template/spec",
    ));
    // Sic: kustomize's CronJob nfs path lacks the pod template's `spec`.
    specs.push((
        "CronJob",
        "spec/jobTemplate/spec/template/volumes/nfs/server".into(),
    ));
    for kind in ["DaemonSet", "Deployment"] {
        specs.extend(container_fields(kind, "spec/template/spec"));
        specs.push((kind, "spec/template/spec/volumes/nfs/server".into()));
    }
    specs.push(("Deployment", "spec/template/metadata/annotations".into()));
    specs.push(("Ingress", "spec/rules/host".into()));
    specs.push(("Ingress", "spec/tls/hosts".into()));
    specs.push(("Ingress", "spec/tls/secretName".into()));
    specs.extend(container_fields("Job", "spec/template/spec"));
    specs.push(("Job", "spec/template/spec/volumes/nfs/server".into()));
    specs.extend(container_fields("Pod", "spec"));
    specs.push(("Pod", "spec/volumes/nfs/server".into()));
    specs.extend(container_fields("ReplicaSet", "spec/template/spec"));
    specs.push(("ReplicaSet", "spec/template/spec/volumes/nfs/server".into()));
    specs.push(("Service", "spec/ports/port".into()));
    specs.push(("Service", "spec/ports/targetPort".into()));
    specs.extend(container_fields("StatefulSet", "spec/template/spec"));
    specs.push((
        "StatefulSet",
        "spec/volumeClaimTemplates/spec/nfs/server".into(),
    ));
    specs.push(("PersistentVolume", "spec/nfs/server".into()));
    let mut entries: Vec<FieldSpecEntry> = specs
        .into_iter()
        .map(|(kind, path)| FieldSpecEntry {
            path,
            kind: Some(kind.to_string()),
            ..FieldSpecEntry::default()
        })
        .collect();
    for path in ["metadata/labels", "metadata/annotations"] {
        entries.push(FieldSpecEntry {
            path: path.into(),
            ..FieldSpecEntry::default()
        });
    }
    entries
});

#[cfg(test)]
mod tests {

    use serde_json::json;

    use super::*;

    #[test]
    fn expansion_follows_kustomize() {
        let values: BTreeMap<&str, Value> = [
            ("SVC", json!("p-svc")),
            ("PORT", json!(80)),
            ("MAP", json!({"a": 1})),
        ]
        .into_iter()
        .collect();
        let expand = |s: &str| {
            let mut unlimited = usize::MAX;
            expand_vars(s, &values, &mut unlimited).unwrap()
        };
        assert_eq!(expand("http://$(SVC):$(PORT)/"), json!("http://p-svc:80/"));
        assert_eq!(expand("$(PORT)"), json!(80));
        assert_eq!(expand("$$(SVC)"), json!("$(SVC)"));
        assert_eq!(expand("$(NOPE) $(MAP)"), json!("$(NOPE) $(MAP)"));
        assert_eq!(expand("a$ $x $( $"), json!("a$ $x $( $"));
    }

    #[test]
    fn many_unclosed_references_are_kept_as_written() {
        // Each `$(` once searched the rest of the string for its `)` (quadratic); now the
        // scan stops at the first unclosed one, and every later `$(` is kept as text.
        let values: BTreeMap<&str, Value> = [("V", json!("v"))].into_iter().collect();
        let input = format!("$(V) {}", "$(".repeat(100_000));
        let mut left = MAX_EXPANDED_BYTES;
        let expanded = expand_vars(&input, &values, &mut left).unwrap();
        assert_eq!(expanded.as_str().map(str::len), Some(input.len() - 3));
        assert!(
            expanded
                .as_str()
                .is_some_and(|text| text.starts_with("v $($("))
        );
    }

    #[test]
    fn var_values_written_are_bounded() {
        let long = "x".repeat(1024 * 1024);
        let values: BTreeMap<&str, Value> = [("V", json!(long))].into_iter().collect();
        let mut left = MAX_EXPANDED_BYTES;
        let error = expand_vars(&"$(V)".repeat(100), &values, &mut left).unwrap_err();
        let error = error.to_string();
        assert!(error.contains("more than 67108864 bytes"), "{error}");
        let mut left = MAX_EXPANDED_BYTES;
        assert!(expand_vars(&"$(V)".repeat(10), &values, &mut left).is_ok());
    }

    #[test]
    fn builtin_table_has_kustomizes_size() {
        assert_eq!(BUILTIN_VAR_REFERENCES.len(), 72);
    }

    /// The kustomization tests' own builder: every file written to a temporary repo, built.
    use super::super::tests::build_tree as build_dir;

    const SVC: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: svc}\n";
    const VAR: &str = "vars:\n- name: SVC\n  objref: {apiVersion: v1, kind: Service, name: svc}\n";

    #[test]
    fn vars_declared_twice_are_refused() {
        let error = build_dir(&[
            ("svc.yaml", SVC),
            ("base/svc.yaml", SVC),
            (
                "base/kustomization.yaml",
                &format!("resources: [svc.yaml]\n{VAR}"),
            ),
            (
                "kustomization.yaml",
                &format!("resources: [base]\nnamePrefix: p-\n{VAR}"),
            ),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("vars[0]") && error.contains("already encountered"),
            "{error}"
        );
    }

    #[test]
    fn unbound_vars_and_missing_fields_are_refused() {
        let unbound = build_dir(&[
            ("svc.yaml", SVC),
            (
                "kustomization.yaml",
                "resources: [svc.yaml]\nvars:\n- name: X\n  objref: {apiVersion: v1, kind: Service, name: other}\n",
            ),
        ])
        .unwrap_err()
        .to_string();
        assert!(unbound.contains("cannot be mapped"), "{unbound}");
        let missing = build_dir(&[
            ("svc.yaml", SVC),
            (
                "kustomization.yaml",
                "resources: [svc.yaml]\nvars:\n- name: X\n  objref: {apiVersion: v1, kind: Service, name: svc}\n  fieldref: {fieldpath: spec.clusterIP}\n",
            ),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            missing.contains("vars[0]") && missing.contains("not found"),
            "{missing}"
        );
    }

    #[test]
    fn non_string_list_items_are_refused() {
        let error = build_dir(&[
            ("svc.yaml", SVC),
            (
                "pod.yaml",
                "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, args: [1]}]\n",
            ),
            ("kustomization.yaml", &format!("resources: [svc.yaml, pod.yaml]\n{VAR}")),
        ])
        .unwrap_err()
        .to_string();
        assert!(error.contains("expect a string"), "{error}");
    }
}
