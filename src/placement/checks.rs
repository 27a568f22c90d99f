//! Names and keys no apiserver accepts: a template that has one fails alone, before any policy
//! looks at it.

use serde_json::Value;

use super::errors::ResourceProblem;
use crate::object::Object;

/// A name or key of a template that no apiserver accepts, as the template has it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum TemplateError {
    /// `metadata.name`.
    #[error(
        "metadata.name {name:?}: not a name Kubernetes accepts (not empty, `.` or `..`, no `/` or `%`, at most 253 bytes)"
    )]
    Name { name: String },
    /// `metadata.namespace`.
    #[error(
        "metadata.namespace {namespace:?}: not a DNS label (lowercase letters, digits and `-`, at most 63)"
    )]
    Namespace { namespace: String },
    /// `kind`.
    #[error(
        "kind {kind:?}: not a kind Kubernetes accepts (a letter, then letters, digits and `-`, at most 63)"
    )]
    Kind { kind: String },
    /// `apiVersion`.
    #[error(
        "apiVersion {api_version:?}: not an apiVersion Kubernetes accepts (`[group/]version`, the group a DNS subdomain, the version a DNS label)"
    )]
    ApiVersion { api_version: String },
    /// A key of a v1 ConfigMap's or Secret's `data`, `binaryData` or `stringData`.
    #[error(
        "{field}.{key}: not a key Kubernetes accepts (letters, digits, `-`, `_` and `.`; not `.`, `..` or a leading `..`; at most 253)"
    )]
    DataKey { field: &'static str, key: String },
}

impl ResourceProblem for TemplateError {
    fn kind(&self) -> &'static str {
        match self {
            TemplateError::Name { .. }
            | TemplateError::Namespace { .. }
            | TemplateError::Kind { .. }
            | TemplateError::ApiVersion { .. } => "invalid_name",
            TemplateError::DataKey { .. } => "invalid_data_key",
        }
    }
}

/// Names an apiserver refuses for every kind: a name that is `.` or `..`, holds `/` or `%`, or
/// is longer than 253 bytes; a namespace that is not a DNS label (RFC 1123, at most 63); a
/// kind or apiVersion no resource can have (they become URL and file path parts).
pub(super) fn check_names(template: &Object) -> Result<(), TemplateError> {
    let name = template.name();
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.contains(['/', '%'])
        || name.len() > 253
    {
        return Err(TemplateError::Name {
            name: name.to_string(),
        });
    }
    let namespace = template.namespace();
    let label = |s: &str| {
        s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    };
    if !namespace.is_empty() && !label(namespace) {
        return Err(TemplateError::Namespace {
            namespace: namespace.to_string(),
        });
    }
    // A kind is a CRD's `names.kind`: its lowercase form must be a DNS-1035 label.
    let kind = template.kind();
    if !kind.starts_with(|c: char| c.is_ascii_alphabetic()) || !label(&kind.to_ascii_lowercase()) {
        return Err(TemplateError::Kind {
            kind: kind.to_string(),
        });
    }
    // apiVersion is `[group/]version`: the group a DNS subdomain, the version a DNS label.
    let api_version = template.api_version();
    let (group, version) = crate::object::split_api_version(api_version);
    let group_ok = group.is_empty()
        || (group.len() <= 253 && group.split('.').all(|part| !part.is_empty() && label(part)));
    if !group_ok || version.is_empty() || !label(version) {
        return Err(TemplateError::ApiVersion {
            api_version: api_version.to_string(),
        });
    }
    check_data_keys(template)
}

/// A v1 ConfigMap's or Secret's data keys become file names in a volume: the apiserver refuses
/// any but letters, digits, `-`, `_` and `.` (not `.`, `..` or a leading `..`, at most 253).
/// kustomize's generators write such keys all the same (`literals: ["../x=1"]`).
fn check_data_keys(template: &Object) -> Result<(), TemplateError> {
    if !template.group().is_empty() || !matches!(template.kind(), "ConfigMap" | "Secret") {
        return Ok(());
    }
    for field in ["data", "binaryData", "stringData"] {
        let Some(Value::Object(entries)) = template.value.get(field) else {
            continue;
        };
        for key in entries.keys() {
            let valid = !key.is_empty()
                && key.len() <= 253
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
                && !key.starts_with("..")
                && key != ".";
            if !valid {
                return Err(TemplateError::DataKey {
                    field,
                    key: key.clone(),
                });
            }
        }
    }
    Ok(())
}
