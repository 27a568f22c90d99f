//! Parsing a file's text into documents and objects, as Kubernetes reads a manifest or as
//! kustomize reads a resource ([`Dialect`]): YAML 1.1 or 1.2 booleans, the scalars kustomize
//! keeps as written (timestamps, typed annotations), alias limits, and the checks every object
//! must pass (`apiVersion`, `kind`, `metadata.name`, Secret data).

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;
use serde_saphyr::Spanned;

use super::MAX_FILE_BYTES;
use crate::object::{Object, Origin};
use crate::render::RenderError;

/// Alias expansions allowed per file: plenty for hand-written YAML, far below a "billion laughs".
const MAX_REPLAYED_ALIAS_EVENTS: usize = 100_000;

/// How a file is read: as Kubernetes reads a manifest, or as kustomize reads a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// YAML 1.1, as Kubernetes decodes manifests (`yes`, `no`, `on`, `off`, `y`, `n` are
    /// booleans); an object needs apiVersion, kind and metadata.name.
    Kubernetes,
    /// As kustomize's kyaml reads resources and patches: YAML 1.2 core booleans (only
    /// `true`/`false`; `yes`, `on`, `y` stay strings, observed with kustomize v5.5.0), and an
    /// object needs only kind and metadata.name (kustomize builds one without apiVersion).
    Kustomize,
}

/// The parser options every fleet file is read with.
pub(crate) fn yaml_options(dialect: Dialect) -> serde_saphyr::Options {
    serde_saphyr::options! {
        legacy_octal_numbers: true,
        strict_booleans: dialect == Dialect::Kustomize,
        with_snippet: false,
        // serde-saphyr's default budget (1,024 documents, 250,000 nodes) refuses real bundles
        // (a 1,500-document manifest) that kustomize reads. The file size limit already bounds
        // the work. The default depth (64) stays: deeper values overflow a 2 MiB thread stack.
        budget: serde_saphyr::budget! {
            max_documents: 100_000,
            max_nodes: MAX_FILE_BYTES as usize,
            max_events: 2 * MAX_FILE_BYTES as usize,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: MAX_REPLAYED_ALIAS_EVENTS,
            max_replay_stack_depth: 16,
        },
    }
}

/// Parses YAML text into values, one per non-empty document, each with its starting line.
pub fn parse_documents(text: &str, path: &Path) -> Result<Vec<(Value, usize)>, RenderError> {
    parse_documents_with(text, path, Dialect::Kubernetes)
}

/// [`parse_documents`] with the given boolean spellings.
pub fn parse_documents_with(
    text: &str,
    path: &Path,
    dialect: Dialect,
) -> Result<Vec<(Value, usize)>, RenderError> {
    parse_documents_as(text, path, dialect, false)
}

/// [`parse_documents_with`]; `resources` when the documents are objects rather than patches,
/// whose null annotation values delete rather than stay as text.
fn parse_documents_as(
    text: &str,
    path: &Path,
    dialect: Dialect,
    resources: bool,
) -> Result<Vec<(Value, usize)>, RenderError> {
    let documents: Vec<Spanned<Value>> =
        serde_saphyr::from_multiple_with_options(text, yaml_options(dialect)).map_err(|error| {
            RenderError::Yaml {
                path: path.to_path_buf(),
                line: error.location().map(|l| l.line() as usize).unwrap_or(0),
                message: yaml_message(&error),
            }
        })?;
    let mut documents = documents;
    // A second read of the text, only for the texts that need it (it is not free on bundles of
    // thousands of objects): a date-like scalar, or an annotation the parser did not read as a
    // string.
    let typed_annotation = || {
        documents.iter().any(|document| {
            document
                .value
                .pointer("/metadata/annotations")
                .and_then(Value::as_object)
                .is_some_and(|a| a.values().any(|v| !v.is_string()))
        })
    };
    if dialect == Dialect::Kustomize && (has_date_like(text) || typed_annotation()) {
        // Each document by the line its root starts on (the first one of a line, as a search
        // from the front finds): a scan of every document per fix-up was quadratic, minutes
        // for a file of 100,000 annotated documents.
        let mut by_line = HashMap::new();
        for (index, document) in documents.iter().enumerate() {
            by_line
                .entry(document.defined.line() as usize)
                .or_insert(index);
        }
        for (document, path, text) in kustomize_scalars(text, resources) {
            if let Some(slot) = by_line
                .get(&document)
                .and_then(|&index| documents.get_mut(index))
                .and_then(|d| value_at_mut(&mut d.value, &path))
                // Only values the parser did not already read as this text.
                && slot.as_str() != Some(text.as_str())
            {
                *slot = Value::String(text);
            }
        }
    }
    if let (Some(path), Some(last)) = (final_block_scalar(text), documents.last_mut())
        && let Some(Value::String(scalar)) = value_at_mut(&mut last.value, &path)
        && scalar.ends_with('\n')
    {
        scalar.pop();
    }
    Ok(documents
        .into_iter()
        .filter(|document| !document.value.is_null())
        .map(|document| (document.value, document.defined.line() as usize))
        .collect())
}

/// One step of a path into a parsed document.
#[derive(Clone)]
enum Step {
    Key(String),
    Index(usize),
}

/// One node of a YAML text as the event parser reads it.
enum Node<'a> {
    /// A mapping key (not a place of its own).
    Key,
    /// A scalar value: its text, its style and whether it carries a tag.
    Scalar(&'a str, granit_parser::ScalarStyle, bool),
    /// A collection's start or an alias.
    Other,
}

/// Calls `visit` with every node of `text`: the line where its document's root node starts
/// (what tells documents apart: the parser's count of documents, empty ones and comment-only
/// ones included, is not serde-saphyr's) and its path there. `None` when the text does not
/// parse (the caller's parser reports that error).
fn walk_nodes(text: &str, visit: &mut dyn FnMut(usize, &[Step], Node)) -> Option<()> {
    use granit_parser::{Event, Parser};
    /// A collection being read: a mapping (with the key of the value to come) or a sequence.
    enum Frame {
        Mapping { key: Option<String> },
        Sequence { next: usize },
    }
    let mut frames: Vec<Frame> = Vec::new();
    let mut path: Vec<Step> = Vec::new();
    let mut document = 0;
    for event in Parser::new_from_str(text) {
        let (event, span) = event.ok()?;
        let is_node = matches!(
            event,
            Event::Scalar(..)
                | Event::SequenceStart(..)
                | Event::MappingStart(..)
                | Event::Alias(_)
        );
        if !is_node {
            match event {
                Event::SequenceEnd | Event::MappingEnd => {
                    frames.pop();
                    // The root collection has no step of its own.
                    if !frames.is_empty() {
                        path.pop();
                    }
                }
                _ => {}
            }
            continue;
        }
        // Where this node sits in its parent; a mapping key is not a place.
        let step = match frames.last_mut() {
            Some(Frame::Mapping { key }) => match key.take() {
                None => {
                    *key = Some(match &event {
                        Event::Scalar(value, ..) => value.to_string(),
                        _ => String::new(),
                    });
                    visit(document, &path, Node::Key);
                    continue;
                }
                Some(key) => Some(Step::Key(key)),
            },
            Some(Frame::Sequence { next }) => {
                *next += 1;
                Some(Step::Index(*next - 1))
            }
            None => {
                document = span.start.line();
                None
            }
        };
        path.extend(step);
        match &event {
            Event::Scalar(value, style, _, tag) => {
                // An empty value (`key:`) is reported as `~`; its span is empty.
                let value = if span.end.index() <= span.start.index() {
                    ""
                } else {
                    value.as_ref()
                };
                visit(document, &path, Node::Scalar(value, *style, tag.is_some()));
            }
            _ => visit(document, &path, Node::Other),
        }
        match event {
            Event::SequenceStart(..) => frames.push(Frame::Sequence { next: 0 }),
            Event::MappingStart(..) => frames.push(Frame::Mapping { key: None }),
            // A scalar or an alias is not entered: its step goes.
            _ if !frames.is_empty() => {
                path.pop();
            }
            _ => {}
        }
    }
    Some(())
}

/// The path of the text's last scalar when it is a block scalar (`|`, `>`) that ends the text
/// without a final line break. The YAML parser under serde-saphyr ends such a scalar with a line
/// break the text does not have (kustomize's parser does not), which changes a ConfigMap's data.
fn final_block_scalar(text: &str) -> Option<Vec<Step>> {
    use granit_parser::ScalarStyle;
    if text.ends_with('\n') || !(text.contains('|') || text.contains('>')) {
        return None;
    }
    let mut last_block: Option<Vec<Step>> = None;
    walk_nodes(text, &mut |_, path, node| {
        last_block = match node {
            Node::Scalar(_, ScalarStyle::Literal | ScalarStyle::Folded, _) => Some(path.to_vec()),
            _ => None,
        };
    })?;
    last_block
}

/// What kustomize writes for plain scalars whose YAML value it does not keep, by document (the
/// line its root node starts on):
/// `metadata.annotations` values keep their text (`1.50`, `0x1F`, and in resources `~` stay as
/// written, as kustomize's string-typed annotations do), and an unquoted timestamp anywhere else comes out
/// as RFC 3339 (`2024-01-01` is `"2024-01-01T00:00:00Z"`: kustomize's objects pass through
/// `map[string]interface{}`, where YAML timestamps become Go times).
fn kustomize_scalars(text: &str, resources: bool) -> Vec<(usize, Vec<Step>, String)> {
    use granit_parser::ScalarStyle;
    let mut fixes = Vec::new();
    let annotation = |path: &[Step]| {
        matches!(path, [Step::Key(m), Step::Key(a), Step::Key(_)]
            if m == "metadata" && a == "annotations")
    };
    let _ = walk_nodes(text, &mut |document, path, node| {
        if let Node::Scalar(text, ScalarStyle::Plain, false) = node {
            if annotation(path) {
                // In a patch a null annotation deletes the annotation.
                let null = matches!(text, "" | "~" | "null" | "Null" | "NULL");
                if resources || !null {
                    fixes.push((document, path.to_vec(), text.to_string()));
                }
            } else if let Some(time) = go_timestamp(text) {
                fixes.push((document, path.to_vec(), time));
            }
        }
    });
    fixes
}

/// The plain scalars of `text` that YAML 1.1 reads as booleans (`yes`, `on`, `y`, `Off`, ...
/// where YAML 1.2 has strings), as paths of keys and list indexes with the boolean. kustomize
/// reads a kustomization file with YAML 1.1 (sigs.k8s.io/yaml), which shows where a field keeps
/// what it read: a helm chart's `valuesInline`.
pub(crate) fn yaml11_booleans(text: &str) -> Vec<(Vec<String>, bool)> {
    use granit_parser::ScalarStyle;
    let mut found = Vec::new();
    let _ = walk_nodes(text, &mut |_, path, node| {
        let Node::Scalar(text, ScalarStyle::Plain, false) = node else {
            return;
        };
        let value = match text {
            "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => true,
            "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => false,
            _ => return,
        };
        let path = path
            .iter()
            .map(|step| match step {
                Step::Key(key) => key.clone(),
                Step::Index(index) => index.to_string(),
            })
            .collect();
        found.push((path, value));
    });
    found
}

/// Whether `text` has four digits, a `-` and a digit somewhere: what every timestamp starts with.
fn has_date_like(text: &str) -> bool {
    text.as_bytes()
        .windows(6)
        .any(|w| w[..4].iter().all(u8::is_ascii_digit) && w[4] == b'-' && w[5].is_ascii_digit())
}

/// A plain scalar YAML reads as a timestamp (go-yaml's formats: `2006-1-2`, `2006-1-2 15:4:5`
/// with an optional fraction, and `2006-1-2T15:4:5` with a fraction and `Z` or `±hh:mm`),
/// written as Go writes a time in JSON (RFC 3339, the fraction without trailing zeros).
fn go_timestamp(text: &str) -> Option<String> {
    fn number(text: &str, min: usize, max: usize) -> Option<u32> {
        (text.len() >= min && text.len() <= max && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse().ok())
            .flatten()
    }
    let (date, rest) = match text.find(['T', 't', ' ']) {
        Some(at) => (&text[..at], Some((&text[at..at + 1], &text[at + 1..]))),
        None => (text, None),
    };
    let mut parts = date.split('-');
    let year = number(parts.next()?, 4, 4)?;
    let month = number(parts.next()?, 1, 2)?;
    let day = number(parts.next()?, 1, 2)?;
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if parts.next().is_some() || !(1..=12).contains(&month) {
        return None;
    }
    if day < 1 || day > days[month as usize - 1] {
        return None;
    }
    let date = format!("{year:04}-{month:02}-{day:02}");
    let Some((separator, time)) = rest else {
        return Some(format!("{date}T00:00:00Z"));
    };
    // The space form has no zone; the `T` forms must end with one.
    let (clock, zone) = if separator == " " {
        (time, "Z".to_string())
    } else if let Some(clock) = time.strip_suffix('Z') {
        (clock, "Z".to_string())
    } else {
        let at = time.rfind(['+', '-'])?;
        let (clock, zone) = time.split_at(at);
        let (hours, minutes) = zone[1..].split_once(':')?;
        let (hours, minutes) = (number(hours, 2, 2)?, number(minutes, 2, 2)?);
        if hours > 23 || minutes > 59 {
            return None;
        }
        let zone = if hours == 0 && minutes == 0 {
            "Z".to_string()
        } else {
            format!("{}{hours:02}:{minutes:02}", &zone[..1])
        };
        (clock, zone)
    };
    let (clock, fraction) = match clock.split_once('.') {
        Some((clock, fraction)) => (clock, Some(fraction)),
        None => (clock, None),
    };
    let mut fields = clock.split(':');
    let hour = number(fields.next()?, 1, 2)?;
    let minute = number(fields.next()?, 1, 2)?;
    let second = number(fields.next()?, 1, 2)?;
    if fields.next().is_some() || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let fraction = match fraction {
        // Go reads any number of digits and keeps nanoseconds.
        Some(f) if !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) => {
            f[..f.len().min(9)].trim_end_matches('0')
        }
        Some(_) => return None,
        None => "",
    };
    let fraction = if fraction.is_empty() {
        String::new()
    } else {
        format!(".{fraction}")
    };
    Some(format!(
        "{date}T{hour:02}:{minute:02}:{second:02}{fraction}{zone}"
    ))
}

fn value_at_mut<'a>(value: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    path.iter().try_fold(value, |value, step| match step {
        Step::Key(key) => value.get_mut(key.as_str()),
        Step::Index(index) => value.get_mut(*index),
    })
}

/// Parses every YAML document of a file into objects; each must be a mapping with an
/// apiVersion, a kind and a name.
pub fn parse_objects(text: &str, path: &Path) -> Result<Vec<Object>, RenderError> {
    parse_objects_with(text, path, Dialect::Kubernetes)
}

/// Parses every YAML document of a file into objects, read and checked as `dialect` says.
pub fn parse_objects_with(
    text: &str,
    path: &Path,
    dialect: Dialect,
) -> Result<Vec<Object>, RenderError> {
    let mut objects = Vec::new();
    for (index, (value, line)) in parse_documents_as(text, path, dialect, true)?
        .into_iter()
        .enumerate()
    {
        let origin = Origin {
            path: path.to_path_buf(),
            document: index + 1,
            line,
        };
        if !value.is_object() {
            return Err(RenderError::InvalidObject {
                origin,
                field: "(document)".into(),
                problem: "expected a mapping with apiVersion, kind and metadata".into(),
            });
        }
        // A `List` (what `kubectl get -o yaml` writes) contributes its items.
        if value.get("kind").and_then(Value::as_str) == Some("List")
            && let Some(items) = value.get("items").and_then(Value::as_array)
        {
            for item in items {
                objects.push(checked_object(item.clone(), origin.clone(), dialect)?);
            }
            continue;
        }
        objects.push(checked_object(value, origin, dialect)?);
    }
    Ok(objects)
}

fn checked_object(value: Value, origin: Origin, dialect: Dialect) -> Result<Object, RenderError> {
    let required: &[&str] = match dialect {
        Dialect::Kubernetes => &["apiVersion", "kind"],
        Dialect::Kustomize => &["kind"],
    };
    if dialect == Dialect::Kustomize && value.get("apiVersion").is_some_and(|v| !v.is_string()) {
        return Err(RenderError::InvalidObject {
            origin,
            field: "apiVersion".into(),
            problem: "not a string".into(),
        });
    }
    for &field in required {
        match value.get(field) {
            Some(Value::String(s)) if !s.is_empty() => {}
            _ => {
                return Err(RenderError::InvalidObject {
                    origin,
                    field: field.into(),
                    problem: "missing or not a string".into(),
                });
            }
        }
    }
    match value.pointer("/metadata/name") {
        Some(Value::String(s)) if !s.is_empty() => {}
        _ => {
            return Err(RenderError::InvalidObject {
                origin,
                field: "metadata.name".into(),
                problem: "missing or not a string".into(),
            });
        }
    }
    check_secret_data(&value, &origin)?;
    Ok(Object::new(value, origin))
}

/// The apiserver decodes a v1 Secret's `data` values as Go's `encoding/json` decodes bytes
/// (standard base64 with padding, line breaks ignored) and refuses the whole object otherwise:
/// refused here, naming the key, rather than in every cluster at apply time. The error never
/// shows the value.
fn check_secret_data(value: &Value, origin: &Origin) -> Result<(), RenderError> {
    use base64::Engine as _;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    /// Go's `base64.StdEncoding`: padding required, non-zero trailing bits accepted.
    const GO_STD: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
    );
    let is_secret = value.get("kind").and_then(Value::as_str) == Some("Secret")
        && value
            .get("apiVersion")
            .and_then(Value::as_str)
            .is_none_or(|version| version == "v1");
    let invalid = |field: String, problem: String| RenderError::InvalidObject {
        origin: origin.clone(),
        field,
        problem,
    };
    let data = match value.get("data") {
        Some(Value::Object(data)) if is_secret => data,
        Some(Value::Null) | None => return Ok(()),
        Some(_) if is_secret => return Err(invalid("data".into(), "not a mapping".into())),
        Some(_) => return Ok(()),
    };
    for (key, entry) in data {
        let problem = match entry {
            Value::Null => continue,
            Value::String(text) => {
                let compact: String = text.chars().filter(|c| !matches!(c, '\r' | '\n')).collect();
                match GO_STD.decode(compact) {
                    Ok(_) => continue,
                    Err(error) => format!("not valid base64 ({error})"),
                }
            }
            _ => "not a base64 string".to_string(),
        };
        return Err(invalid(format!("data.{key}"), problem));
    }
    Ok(())
}

/// The parser's message without its own position suffix (we print `path:line:` ourselves).
fn yaml_message(error: &serde_saphyr::Error) -> String {
    let text = error.to_string();
    let first = text.lines().next().unwrap_or("").trim();
    // Only a trailing `at line N, column M` is the parser's own position; an alias error's
    // `(used at line ...)` is part of what it says.
    let position_suffix = |tail: &str| {
        tail.strip_prefix(" at line ")
            .and_then(|rest| rest.split_once(", column "))
            .is_some_and(|(line, column)| {
                [line, column]
                    .iter()
                    .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
    };
    match first.rfind(" at line ") {
        Some(at) if position_suffix(&first[at..]) => first[..at].to_string(),
        _ => first.to_string(),
    }
}

/// About the objects of `text`, from the parser's events (nothing is built): every document
/// that is a collection, and every collection in a root `items` (a List's objects; a List
/// counts one more than it gives). `None` when the text does not parse (the parser that builds
/// the objects reports that).
pub(super) fn count_objects_in(text: &str) -> Option<usize> {
    let mut count = 0usize;
    walk_nodes(text, &mut |_, path, node| {
        let object = match path {
            [] => true,
            [Step::Key(key), Step::Index(_)] => key == "items",
            _ => false,
        };
        if object && matches!(node, Node::Other) {
            count += 1;
        }
    })?;
    Some(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Object>, RenderError> {
        parse_objects(text, Path::new("apps/x.yaml"))
    }

    #[test]
    fn yaml_11_octal_and_booleans_match_kubernetes() {
        let objects = parse(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {}\nmode: 0644\nflag: yes\nquoted: \"0644\"\n",
        )
        .unwrap();
        let value = &objects[0].value;
        assert_eq!(value["mode"], 420);
        assert_eq!(value["flag"], true);
        assert_eq!(value["quoted"], "0644");
    }

    #[test]
    fn yaml_12_booleans_leave_yes_and_y_strings() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\nx: {a: y, b: yes, c: on, d: True, e: 0644}\n";
        let objects = parse_objects_with(text, Path::new("t.yaml"), Dialect::Kustomize).unwrap();
        let x = &objects[0].value["x"];
        assert_eq!(x["a"], "y");
        assert_eq!(x["b"], "yes");
        assert_eq!(x["c"], "on");
        assert_eq!(x["d"], true);
        assert_eq!(x["e"], 420);
    }

    #[test]
    fn kept_texts_land_in_their_own_documents() {
        // Comment-only and empty documents count for the event parser, not for serde-saphyr.
        let text = "# leading\n---\n---\nkind: A\nmetadata:\n  name: a\n  annotations: {v: 1.10}\n\
                    ---\n# only a comment\n---\nkind: B\nmetadata:\n  name: b\n  annotations: {v: 2.20}\n\
                    data: {t: 2025-02-02}\n...\n---\nkind: C\nmetadata:\n  name: c\n";
        let objects = parse_objects_with(text, Path::new("t.yaml"), Dialect::Kustomize).unwrap();
        let values: Vec<_> = objects.iter().map(|o| &o.value).collect();
        assert_eq!(values[0]["metadata"]["annotations"]["v"], "1.10");
        assert_eq!(values[1]["metadata"]["annotations"]["v"], "2.20");
        assert_eq!(values[1]["data"]["t"], "2025-02-02T00:00:00Z");
        assert!(values[2]["metadata"].get("annotations").is_none());
    }

    #[test]
    fn timestamps_are_written_as_go_writes_them() {
        for (text, expected) in [
            ("2024-05-01", Some("2024-05-01T00:00:00Z")),
            ("2024-5-1", Some("2024-05-01T00:00:00Z")),
            (
                "2001-12-14t21:59:43.10-05:00",
                Some("2001-12-14T21:59:43.1-05:00"),
            ),
            ("2001-12-14 21:59:43.10", Some("2001-12-14T21:59:43.1Z")),
            ("2024-05-01T08:00:00.000Z", Some("2024-05-01T08:00:00Z")),
            ("2024-05-01T08:00:00+00:00", Some("2024-05-01T08:00:00Z")),
            ("2024-05-01 8:0:0", Some("2024-05-01T08:00:00Z")),
            (
                "2024-05-01T08:00:00.1234567891Z",
                Some("2024-05-01T08:00:00.123456789Z"),
            ),
            ("2024-05-01T24:00:00Z", None),
            ("2024-05-01 08:00:00+02:00", None),
            ("2024-02-30", None),
            ("2024-05-01T08:00:00", None),
            ("24-05-01", None),
            ("v2024-05-01", None),
        ] {
            assert_eq!(go_timestamp(text).as_deref(), expected, "{text}");
        }
    }

    #[test]
    fn block_scalar_ending_the_file_has_no_line_break_it_lacks() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata:\n  first: |\n    one\n  list:\n  - x\n  - |\n    two\n    lines";
        let objects = parse(text).unwrap();
        assert_eq!(objects[0].value["data"]["first"], "one\n");
        assert_eq!(objects[0].value["data"]["list"][1], "two\nlines");
        // With the final line break, the scalar keeps it (clip chomping).
        let objects = parse(&format!("{text}\n")).unwrap();
        assert_eq!(objects[0].value["data"]["list"][1], "two\nlines\n");
        // A folded scalar, in the second document.
        let objects = parse("kind: A\napiVersion: v1\nmetadata: {name: a}\n---\nkind: B\napiVersion: v1\nmetadata: {name: b}\nnote: >\n  folded\n  text").unwrap();
        assert_eq!(objects[1].value["note"], "folded text");
    }

    #[test]
    fn large_bundles_load() {
        let bundle: String = (0..1_500)
            .map(|i| format!("---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c{i}}}\n"))
            .collect();
        assert_eq!(parse(&bundle).unwrap().len(), 1_500);
    }

    #[test]
    fn kustomize_fix_ups_find_their_document_among_many() {
        // Every timestamp's text is put back in its own document, found by line (a scan of
        // every document per fix-up was quadratic: `benches/kustomize` measures the speed).
        let dates = vec!["2024-01-01"; 2_000].join(", ");
        let text = format!("{}--- [{dates}]\n--- 2024-01-02\n", "--- 0\n".repeat(5_000));
        let documents =
            parse_documents_with(&text, Path::new("t.yaml"), Dialect::Kustomize).unwrap();
        assert_eq!(documents.len(), 5_002);
        assert_eq!(documents[5_000].0[1_999], "2024-01-01T00:00:00Z");
        assert_eq!(documents[5_001].0, "2024-01-02T00:00:00Z");
        assert_eq!(documents[4_999].0, 0);
    }

    #[test]
    fn documents_keep_index_and_line() {
        let objects = parse(
            "# leading comment\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n",
        )
        .unwrap();
        assert_eq!(objects.len(), 2);
        assert_eq!(objects[0].origin.line, 3);
        assert_eq!(objects[1].name(), "b");
        assert_eq!(objects[1].origin.document, 2);
        assert_eq!(objects[1].origin.line, 8);
    }

    #[test]
    fn missing_kind_names_file_document_and_field() {
        let error = parse("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nmetadata: {name: b}\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("apps/x.yaml:5: document 2"), "{error}");
        assert!(error.contains("kind"), "{error}");
    }

    #[test]
    fn syntax_error_names_file_and_line() {
        let error = parse("apiVersion: v1\nkind: [unclosed\nmetadata: {name: a}\n")
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("apps/x.yaml:"), "{error}");
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..10 {
            let prev = (b'a' + level - 1) as char;
            let name = (b'a' + level) as char;
            text.push_str(&format!(
                "{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
            ));
        }
        let error = parse_documents(&text, Path::new("bomb.yaml")).unwrap_err();
        assert!(matches!(error, RenderError::Yaml { .. }), "{error}");
        // The whole message: where the alias was defined and where it was used.
        let message = error.to_string();
        assert!(message.contains("alias replay limit exceeded"), "{message}");
        assert!(!message.ends_with("(used"), "{message}");
        assert!(message.contains("(used at line"), "{message}");
    }
}
