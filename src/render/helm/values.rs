//! The values helm gets: kustomize's `valuesMerge` of `valuesInline` with the values file,
//! as kyaml reads and merges them.

use serde_json::{Map, Value};

/// kustomize's `valuesMerge`: which side wins when valuesInline meets the values file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ValuesMerge {
    /// valuesInline wins (the default).
    Override,
    /// The values file wins.
    Merge,
    /// valuesInline alone.
    Replace,
}

/// Why the values file and `valuesInline` could not be merged.
#[derive(Debug, thiserror::Error)]
pub enum ValuesError {
    /// The values file is not YAML.
    #[error("{message}")]
    Yaml {
        /// The parser's message (its first line).
        message: String,
    },
    /// The values file has only comments, or nothing (kyaml cannot parse it).
    #[error("the values file has no YAML document")]
    NoDocument,
    /// The values file's document is a list or a scalar.
    #[error("the values file is not a mapping")]
    NotAMapping,
    /// The values nest deeper than [`MAX_VALUES_DEPTH`].
    #[error("values nest deeper than {MAX_VALUES_DEPTH} at {path}")]
    TooDeep {
        /// Where, as `.a.b.c`.
        path: String,
    },
    /// A mapping, list or scalar meets another kind (kyaml's "wrong node kind").
    #[error("cannot merge {winner} into {base} at {path}")]
    KindMismatch {
        /// The kind of the winning side's value.
        winner: &'static str,
        /// The kind of the other side's value.
        base: &'static str,
        /// Where, as `.a.b` (`.` at the top).
        path: String,
    },
}

/// Parses a values file the way kustomize's kyaml (YAML 1.2 booleans, `0644` octal) reads it.
pub(super) fn parse_values(text: &str) -> Result<Value, ValuesError> {
    let documents: Vec<Value> = serde_saphyr::from_multiple_with_options(
        text,
        serde_saphyr::options! {
            legacy_octal_numbers: true,
            strict_booleans: true,
            with_snippet: false,
            alias_limits: serde_saphyr::alias_limits! {
                max_total_replayed_events: 100_000,
                max_replay_stack_depth: 16,
            },
        },
    )
    .map_err(|error| ValuesError::Yaml {
        message: error.to_string().lines().next().unwrap_or("").to_string(),
    })?;
    match documents.into_iter().next() {
        // kyaml cannot parse a values file without a document (only comments, or nothing).
        None => Err(ValuesError::NoDocument),
        Some(Value::Null) => Ok(Value::Object(Map::new())),
        Some(value @ Value::Object(_)) => Ok(value),
        Some(_) => Err(ValuesError::NotAMapping),
    }
}

/// kyaml's `merge2.Merge(winner, base)` without a schema: maps merge key by key, a null in
/// `winner` removes the key (and adds none where `base` lacks it), anything else in `winner`
/// (scalars, lists) replaces.
pub(super) fn merge_values(winner: Value, base: Value) -> Result<Value, ValuesError> {
    merge_at(winner, base, "", 0)
}

/// Deepest values nesting merged (far beyond real charts; bounds the recursion).
const MAX_VALUES_DEPTH: usize = 64;

fn merge_at(winner: Value, base: Value, path: &str, depth: usize) -> Result<Value, ValuesError> {
    if depth > MAX_VALUES_DEPTH {
        return Err(ValuesError::TooDeep {
            path: path.to_string(),
        });
    }
    match (winner, base) {
        (Value::Object(winner), Value::Object(mut base)) => {
            for (key, value) in winner {
                let field = format!("{path}.{key}");
                match (value, base.remove(&key)) {
                    (Value::Null, Some(Value::Null)) => {
                        base.insert(key, Value::Null);
                    }
                    // A null clears the field: there is none to clear when `base` lacks it.
                    (Value::Null, _) => {}
                    (value, None | Some(Value::Null)) => {
                        base.insert(key, without_null_fields(value));
                    }
                    (value, Some(existing)) => {
                        base.insert(key, merge_at(value, existing, &field, depth + 1)?);
                    }
                }
            }
            Ok(Value::Object(base))
        }
        // kyaml refuses to merge nodes of different kinds ("wrong node kind").
        (winner, base)
            if !winner.is_null() && !base.is_null() && kind_of(&winner) != kind_of(&base) =>
        {
            Err(ValuesError::KindMismatch {
                winner: kind_of(&winner),
                base: kind_of(&base),
                path: if path.is_empty() { "." } else { path }.to_string(),
            })
        }
        (winner, _) => Ok(winner),
    }
}

/// A mapping kyaml copies into a merge result where the other side has nothing: its null
/// fields clear nothing and are left out, at every depth (lists are copied as they are).
fn without_null_fields(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_null_fields(v)))
                .collect(),
        ),
        other => other,
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Object(_) => "a mapping",
        Value::Array(_) => "a list",
        _ => "a scalar",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_merge_like_kyaml() {
        let file = serde_json::json!({"q": {"a": 1, "b": 2}, "r": [1, 2], "t": 5, "u": null});
        let inline = serde_json::json!({"q": {"a": null}, "r": null, "u": {"z": 1}, "v": null, "w": {"x": null}});
        assert_eq!(
            merge_values(inline.clone(), file.clone()).unwrap(),
            serde_json::json!({"q": {"b": 2}, "t": 5, "u": {"z": 1}, "w": {}})
        );
        assert_eq!(
            merge_values(file, inline).unwrap(),
            serde_json::json!({"q": {"a": 1, "b": 2}, "r": [1, 2], "t": 5, "v": null, "w": {"x": null}})
        );
        assert!(merge_values(serde_json::json!({"t": [1]}), serde_json::json!({"t": 5})).is_err());
    }
}
