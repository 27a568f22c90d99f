//! Kustomize's dotted field paths (`spec.containers.[name=app].env.0.value`), as replacements
//! and vars read and write them.
//!
//! Two readings, as in kyaml: a *lookup* (a replacement's source, a var's fieldref) follows
//! one path and matches `[name=value]` exactly; a *match* (a replacement's targets) may fan out
//! through `*` and `[name=regex]`, which matches every element whose field contains the regex,
//! and may create what is missing.

use serde_json::{Map, Value};

/// The most parts a path may have; deeper paths are refused rather than walked.
const MAX_PARTS: usize = 64;

/// Why a field path cannot be read, or cannot be followed in an object.
#[derive(Debug, thiserror::Error)]
pub enum FieldPathError {
    /// The path has more parts than [`MAX_PARTS`].
    #[error("more than {MAX_PARTS} parts")]
    TooManyParts,
    /// A list index with a minus sign (`-1`).
    #[error("array index {piece} cannot be negative")]
    NegativeIndex {
        /// The part as written.
        piece: String,
    },
    /// A bracketed part that is not `[field=value]`.
    #[error("{piece}: list path element must contain fieldName=fieldValue for element to match")]
    NotAnElementMatch {
        /// The part as written.
        piece: String,
    },
    /// Two dots in a row, or a path ending in one.
    #[error("empty field name")]
    EmptyField,
    /// `*` in a lookup, which follows one path only.
    #[error("wildcard is not supported in a lookup")]
    WildcardInLookup,
    /// `-` in a match, which it does not support.
    #[error("`-` is only supported in a lookup")]
    LastInMatch,
    /// A lookup met a scalar or list where the path names a field.
    #[error("{field}: not a map")]
    NotAMap {
        /// The field the path names.
        field: String,
    },
    /// A match met something other than a map where the path names a field.
    #[error("{field}: expected a map, found {found}")]
    ExpectedMap {
        /// The field the path names.
        field: String,
        /// What was there ("a list", "a string", ...).
        found: &'static str,
    },
    /// A match met something other than a list where the path names list elements.
    #[error("{part}: expected a list, found {found}")]
    ExpectedList {
        /// The part, as written.
        part: String,
        /// What was there.
        found: &'static str,
    },
    /// A list index past the end (and not the one position that may be created).
    #[error("index {index} specified but only {length} elements found")]
    IndexOutOfRange {
        /// The index in the path.
        index: usize,
        /// How many elements the list has.
        length: usize,
    },
    /// A `[field=pattern]` whose pattern is not a regular expression.
    #[error("invalid pattern {pattern:?}")]
    Pattern {
        /// The pattern as written.
        pattern: String,
        /// The regex compiler's complaint.
        #[source]
        source: regex_lite::Error,
    },
}

/// One step of a field path.
#[derive(Debug, Clone)]
pub enum Part {
    /// A map key (`spec`, or `[a.b/c]` for a key with dots).
    Field(String),
    /// A list position (`0`).
    Index(usize),
    /// The last element of a list (`-`; lookups only).
    Last,
    /// Every element of a list (`*`; matches only).
    Every,
    /// List elements whose `field` (or the element itself, when empty) equals / matches `value`.
    Element {
        /// The field of each element to compare; empty for a list of scalars.
        field: String,
        /// The value as written.
        value: String,
    },
}

/// Splits a path the way kyaml's `SmarterPathSplitter` does: on dots, except escaped ones
/// (`\.`) and those inside brackets; a bracketed key without `=` loses its brackets.
pub fn parse(path: &str) -> Result<Vec<Part>, FieldPathError> {
    let pieces = split_escaped(path, '.');
    let mut joined: Vec<String> = Vec::new();
    let mut iter = pieces.into_iter();
    while let Some(piece) = iter.next() {
        if piece.starts_with('[') && !piece.ends_with(']') {
            let mut bracketed = piece;
            for next in iter.by_ref() {
                bracketed.push('.');
                bracketed.push_str(&next);
                if bracketed.ends_with(']') {
                    break;
                }
            }
            if bracketed.contains('=') {
                joined.push(bracketed);
            } else {
                joined.push(bracketed.trim_matches(|c| c == '[' || c == ']').to_string());
            }
        } else {
            joined.push(piece);
        }
    }
    if joined.len() > MAX_PARTS {
        return Err(FieldPathError::TooManyParts);
    }
    joined.iter().map(|piece| parse_part(piece)).collect()
}

/// kyaml's `PathSplitter`: splits on `delimiter` except where a backslash escapes it; a
/// leading delimiter is allowed (`/a/b`).
pub fn split_escaped(path: &str, delimiter: char) -> Vec<String> {
    let mut raw: Vec<&str> = path.split(delimiter).collect();
    if raw.len() > 1 && raw[0].is_empty() {
        raw.remove(0);
    }
    let mut pieces: Vec<String> = Vec::new();
    for piece in raw {
        match pieces.last_mut() {
            Some(last) if last.ends_with('\\') => {
                last.pop();
                last.push(delimiter);
                last.push_str(piece);
            }
            _ => pieces.push(piece.to_string()),
        }
    }
    pieces
}

fn parse_part(piece: &str) -> Result<Part, FieldPathError> {
    if piece == "*" {
        return Ok(Part::Every);
    }
    if piece == "-" {
        return Ok(Part::Last);
    }
    if let Ok(index) = piece.parse::<usize>() {
        return Ok(Part::Index(index));
    }
    if piece.starts_with('-') && piece[1..].parse::<usize>().is_ok() {
        return Err(FieldPathError::NegativeIndex {
            piece: piece.to_string(),
        });
    }
    if let Some(inner) = piece.strip_prefix('[').and_then(|p| p.strip_suffix(']')) {
        let Some((field, value)) = inner.split_once('=') else {
            return Err(FieldPathError::NotAnElementMatch {
                piece: piece.to_string(),
            });
        };
        return Ok(Part::Element {
            field: field.to_string(),
            value: value.to_string(),
        });
    }
    if piece.is_empty() {
        return Err(FieldPathError::EmptyField);
    }
    Ok(Part::Field(piece.to_string()))
}

/// Follows `parts` from `value` like kyaml's `Lookup`: `[f=v]` takes the first element whose
/// `f` is exactly `v`; `*` is refused. `None` when the path is absent.
pub fn lookup<'a>(value: &'a Value, parts: &[Part]) -> Result<Option<&'a Value>, FieldPathError> {
    let mut node = value;
    for part in parts {
        let next = match (part, node) {
            (_, Value::Null) => None,
            (Part::Every, _) => return Err(FieldPathError::WildcardInLookup),
            (Part::Field(name), Value::Object(map)) => map.get(name),
            (Part::Field(name), _) => {
                return Err(FieldPathError::NotAMap {
                    field: name.clone(),
                });
            }
            (Part::Index(index), Value::Array(items)) => items.get(*index),
            (Part::Last, Value::Array(items)) => items.last(),
            (Part::Element { field, value }, Value::Array(items)) => items.iter().find(|item| {
                let candidate = if field.is_empty() {
                    Some(*item)
                } else {
                    item.get(field)
                };
                candidate.and_then(scalar_text).as_deref() == Some(value.as_str())
            }),
            (Part::Index(_) | Part::Last | Part::Element { .. }, _) => None,
        };
        match next {
            Some(found) => node = found,
            None => return Ok(None),
        }
    }
    Ok(Some(node))
}

/// Whether matching creates what a path misses (a replacement target's `options.create`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    /// Missing parts are not created.
    No,
    /// Missing parts are created; a created leaf starts as null and takes the written value.
    Yes,
}

/// A field path ready for matching: its parts with their `[f=regex]` patterns compiled.
pub struct Matcher {
    parts: Vec<(Part, Option<regex_lite::Regex>)>,
}

impl Matcher {
    /// Compiles the element patterns of `parts` (kyaml matches them unanchored).
    pub fn new(parts: Vec<Part>) -> Result<Self, FieldPathError> {
        let parts = parts
            .into_iter()
            .map(|part| {
                let regex = match &part {
                    Part::Element { value, .. } => {
                        Some(regex_lite::Regex::new(value).map_err(|source| {
                            FieldPathError::Pattern {
                                pattern: value.clone(),
                                source,
                            }
                        })?)
                    }
                    _ => None,
                };
                Ok((part, regex))
            })
            .collect::<Result<_, FieldPathError>>()?;
        Ok(Matcher { parts })
    }

    /// Calls `set` on every node the path reaches in `value` (like kyaml's `PathMatcher`),
    /// creating missing fields, appended list positions and unmatched `[f=v]` elements when
    /// `create` says so. Returns how many nodes were reached. `set`'s own error type carries
    /// both its failures and the path's ([`FieldPathError`]).
    pub fn apply<E: From<FieldPathError>>(
        &self,
        value: &mut Value,
        create: Create,
        set: &mut dyn FnMut(&mut Value) -> Result<(), E>,
    ) -> Result<usize, E> {
        self.apply_from(0, value, create, set)
    }

    fn apply_from<E: From<FieldPathError>>(
        &self,
        at: usize,
        node: &mut Value,
        create: Create,
        set: &mut dyn FnMut(&mut Value) -> Result<(), E>,
    ) -> Result<usize, E> {
        let Some((part, regex)) = self.parts.get(at) else {
            set(node)?;
            return Ok(1);
        };
        let creating = create == Create::Yes;
        // A null met while creating becomes what the part needs.
        if node.is_null() && creating {
            *node = match part {
                Part::Field(_) => Value::Object(Map::new()),
                _ => Value::Array(Vec::new()),
            };
        }
        match part {
            Part::Field(name) => {
                let map = match node {
                    Value::Object(map) => map,
                    Value::Null => return Ok(0),
                    _ => {
                        return Err(FieldPathError::ExpectedMap {
                            field: name.clone(),
                            found: kind_of(node),
                        }
                        .into());
                    }
                };
                if !map.contains_key(name) {
                    if !creating {
                        return Ok(0);
                    }
                    map.insert(name.clone(), self.new_node(at + 1));
                }
                match map.get_mut(name) {
                    Some(child) => self.apply_from(at + 1, child, create, set),
                    None => Ok(0),
                }
            }
            Part::Index(index) => {
                let Some(items) = as_list(node, part)? else {
                    return Ok(0);
                };
                if items.len() == *index && creating {
                    items.push(self.new_node(at + 1));
                }
                let found = items.len();
                match items.get_mut(*index) {
                    Some(child) => self.apply_from(at + 1, child, create, set),
                    None => Err(FieldPathError::IndexOutOfRange {
                        index: *index,
                        length: found,
                    }
                    .into()),
                }
            }
            Part::Last => Err(FieldPathError::LastInMatch.into()),
            Part::Every => {
                let Some(items) = as_list(node, part)? else {
                    return Ok(0);
                };
                let mut count = 0;
                for item in items.iter_mut() {
                    count += self.apply_from(at + 1, item, create, set)?;
                }
                Ok(count)
            }
            Part::Element { field, value } => {
                let Some(items) = as_list(node, part)? else {
                    return Ok(0);
                };
                let matches = |item: &Value| {
                    let candidate = if field.is_empty() {
                        Some(item)
                    } else {
                        item.get(field)
                    };
                    let text = candidate.and_then(scalar_text);
                    text.is_some_and(|text| regex.as_ref().is_some_and(|r| r.is_match(&text)))
                };
                let mut count = 0;
                let mut matched = false;
                for item in items.iter_mut() {
                    if matches(item) {
                        matched = true;
                        count += self.element_step(at, item, field.is_empty(), create, set)?;
                    }
                }
                if matched || !creating {
                    return Ok(count);
                }
                let new_element = if field.is_empty() {
                    Value::String(value.clone())
                } else {
                    let mut map = Map::new();
                    map.insert(field.clone(), Value::String(value.clone()));
                    Value::Object(map)
                };
                items.push(new_element);
                match items.last_mut() {
                    Some(item) => self.element_step(at, item, field.is_empty(), create, set),
                    None => Ok(0),
                }
            }
        }
    }

    /// A matched element: a scalar element (`[=v]`) is itself the result, as in kyaml.
    fn element_step<E: From<FieldPathError>>(
        &self,
        at: usize,
        item: &mut Value,
        scalar: bool,
        create: Create,
        set: &mut dyn FnMut(&mut Value) -> Result<(), E>,
    ) -> Result<usize, E> {
        if scalar {
            set(item)?;
            Ok(1)
        } else {
            self.apply_from(at + 1, item, create, set)
        }
    }

    /// The node created for a missing part, shaped for the part after it (kyaml's
    /// `getPathPartKind`): a list before an index or `[f=v]`, a map before a field, null last.
    fn new_node(&self, next: usize) -> Value {
        match self.parts.get(next) {
            None => Value::Null,
            Some((Part::Field(_), _)) => Value::Object(Map::new()),
            Some(_) => Value::Array(Vec::new()),
        }
    }
}

/// The list `node` is, `None` when it is null; a map or scalar is an error.
fn as_list<'v>(
    node: &'v mut Value,
    part: &Part,
) -> Result<Option<&'v mut Vec<Value>>, FieldPathError> {
    match node {
        Value::Array(items) => Ok(Some(items)),
        Value::Null => Ok(None),
        other => Err(FieldPathError::ExpectedList {
            part: part_text(part),
            found: kind_of(other),
        }),
    }
}

fn part_text(part: &Part) -> String {
    match part {
        Part::Field(name) => name.clone(),
        Part::Index(index) => index.to_string(),
        Part::Last => "-".into(),
        Part::Every => "*".into(),
        Part::Element { field, value } => format!("[{field}={value}]"),
    }
}

/// "a map", "a list", ... for messages.
pub fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

/// A scalar's text as YAML holds it (`8080`, `true`, `app`); `None` for maps, lists and null.
pub fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// What `text` reads as when written as a plain YAML scalar: `5` a number, `true` a boolean,
/// anything else a string. Kustomize writes untagged scalars this way.
pub fn plain_scalar(text: &str) -> Value {
    // Numbers, booleans and nulls are short and have none of YAML's structure characters;
    // anything else is a string without parsing (no anchors or aliases are ever expanded).
    let structural = |c: char| "&*[]{}:#,|>'\"\n".contains(c);
    if text.len() > 64 || text.contains(structural) {
        return Value::String(text.to_string());
    }
    match serde_saphyr::from_str::<Value>(text) {
        Ok(value @ (Value::Number(_) | Value::Bool(_) | Value::Null)) => value,
        _ => Value::String(text.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parts(path: &str) -> Vec<String> {
        parse(path).unwrap().iter().map(part_text).collect()
    }

    #[test]
    fn splits_like_kyaml() {
        assert_eq!(
            parts("spec.containers.[name=a.b].env.0.value"),
            ["spec", "containers", "[name=a.b]", "env", "0", "value"]
        );
        assert_eq!(
            parts("metadata.annotations.[a.b/c]"),
            ["metadata", "annotations", "a.b/c"]
        );
        assert_eq!(parts(r"data.a\.b"), ["data", "a.b"]);
        assert!(parse("a.[b]").is_err());
        assert!(parse("a..b").is_err());
    }

    #[test]
    fn lookup_matches_exactly_and_match_by_regex() {
        let doc = json!({"l": [{"name": "app"}, {"name": "myapp", "v": 1}]});
        let found = lookup(&doc, &parse("l.[name=app]").unwrap()).unwrap();
        assert_eq!(found, Some(&json!({"name": "app"})));
        assert_eq!(
            lookup(&doc, &parse("l.-.v").unwrap()).unwrap(),
            Some(&json!(1))
        );
        let mut doc = doc;
        let matcher = Matcher::new(parse("l.[name=app].v").unwrap()).unwrap();
        let count = matcher
            .apply::<FieldPathError>(&mut doc, Create::Yes, &mut |v| {
                *v = json!(2);
                Ok(())
            })
            .unwrap();
        assert_eq!(count, 2);
        assert_eq!(
            doc,
            json!({"l": [{"name": "app", "v": 2}, {"name": "myapp", "v": 2}]})
        );
    }

    #[test]
    fn plain_scalars_resolve() {
        assert_eq!(plain_scalar("5"), json!(5));
        assert_eq!(plain_scalar("true"), json!(true));
        assert_eq!(plain_scalar("a: b"), json!("a: b"));
        assert_eq!(plain_scalar("&a [*a]"), json!("&a [*a]"));
    }
}
