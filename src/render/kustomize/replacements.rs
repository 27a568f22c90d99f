//! `replacements`: copy a field of one object into fields of others (kustomize's
//! ReplacementTransformer, which runs last among a kustomization's transformers).
//!
//! Semantics follow kustomize v5.5: the source must select exactly one object by any name it
//! has had; targets are selected by id (current or earlier names, exact) and by label and
//! annotation selectors; a reject drops an object matching its id part *or* its selector part.
//! Target paths fan out through `*` and `[field=regex]`; a path that reaches nothing is an
//! error unless the object was not selected.

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_json::Value;

use super::patches::Target;
use super::{Level, RenderError};
use crate::error::chain;
use crate::render::fieldpath::{
    self, Create, FieldPathError, Matcher, kind_of, plain_scalar, scalar_text,
};
use crate::render::load::parse_documents;

/// The path a source or target reads or writes when it names none.
const DEFAULT_FIELD_PATH: &str = "metadata.name";

/// How much one kustomization's replacements may write, in [`size`] units (about bytes): a
/// replacement that copies a map into the object it comes from (`spec` into `spec.l` and
/// `spec.r`) triples it, so 25 such entries in a 4 KiB kustomization took every byte of memory
/// (shown with the kustomize_build fuzz target). Real replacements copy names, hosts and images.
pub const MAX_REPLACED_SIZE: usize = 64 * 1024 * 1024;

/// The size of a value for [`MAX_REPLACED_SIZE`]: [`NODE_SIZE`] per node, plus its keys' and
/// strings' bytes.
fn size(value: &Value) -> usize {
    match value {
        Value::String(text) => NODE_SIZE + text.len(),
        Value::Array(items) => NODE_SIZE + items.iter().map(size).sum::<usize>(),
        Value::Object(map) => {
            NODE_SIZE
                + map
                    .iter()
                    .map(|(key, value)| key.len() + size(value))
                    .sum::<usize>()
        }
        _ => NODE_SIZE,
    }
}

/// About what a node of a value takes in memory, in bytes.
const NODE_SIZE: usize = 32;

/// One entry of `replacements`: inline (`source` + `targets`) or a `path` to a file holding
/// one replacement or a list of them.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplacementEntry {
    path: Option<String>,
    source: Option<SourceSelector>,
    targets: Option<Vec<TargetSelector>>,
}

/// The object and field a replacement copies from.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SourceSelector {
    group: Option<String>,
    version: Option<String>,
    kind: Option<String>,
    name: Option<String>,
    namespace: Option<String>,
    field_path: Option<String>,
    options: Option<FieldOptions>,
}

/// Where a replacement writes.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TargetSelector {
    select: Option<Target>,
    #[serde(default)]
    reject: Vec<Target>,
    #[serde(default)]
    field_paths: Vec<String>,
    options: Option<FieldOptions>,
}

/// How a value is split, joined and created.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FieldOptions {
    #[serde(default)]
    delimiter: String,
    #[serde(default)]
    index: i64,
    /// Kustomize accepts this and does nothing with it yet; so does Flotilla.
    #[allow(dead_code)]
    encoding: Option<String>,
    #[serde(default)]
    create: bool,
}

/// An id selector as a patch [`Target`]: group, version, kind, name and namespace matched
/// exactly, like kustomize's `ResId.IsSelectedBy` (the patch matcher reads them as regular
/// expressions, so each is escaped).
fn id_target(
    group: &Option<String>,
    version: &Option<String>,
    kind: &Option<String>,
    name: &Option<String>,
    namespace: &Option<String>,
) -> Target {
    let exact = |s: &Option<String>| {
        s.as_deref()
            .filter(|s| !s.is_empty())
            .map(regex_lite::escape)
    };
    Target {
        group: exact(group),
        version: exact(version),
        kind: exact(kind),
        name: exact(name),
        namespace: exact(namespace),
        label_selector: None,
        annotation_selector: None,
    }
}

/// A `select` or `reject`: the patch target shape, read with replacement semantics.
impl Target {
    fn id(&self) -> Target {
        id_target(
            &self.group,
            &self.version,
            &self.kind,
            &self.name,
            &self.namespace,
        )
    }

    fn has_id(&self) -> bool {
        [
            &self.group,
            &self.version,
            &self.kind,
            &self.name,
            &self.namespace,
        ]
        .iter()
        .any(|s| s.as_deref().is_some_and(|s| !s.is_empty()))
    }

    fn has_selectors(&self) -> bool {
        [&self.label_selector, &self.annotation_selector]
            .iter()
            .any(|s| s.as_deref().is_some_and(|s| !s.is_empty()))
    }

    /// Only the label and annotation selectors.
    fn selectors(&self) -> Target {
        Target {
            label_selector: self.label_selector.clone().filter(|s| !s.is_empty()),
            annotation_selector: self.annotation_selector.clone().filter(|s| !s.is_empty()),
            ..Target::default()
        }
    }

    /// Id and selectors together: what `select` requires.
    fn all(&self) -> Target {
        Target {
            label_selector: self.label_selector.clone().filter(|s| !s.is_empty()),
            annotation_selector: self.annotation_selector.clone().filter(|s| !s.is_empty()),
            ..self.id()
        }
    }
}

impl SourceSelector {
    fn describe(&self) -> String {
        let part = |s: &Option<String>| s.clone().unwrap_or_default();
        let group_version = match (part(&self.group), part(&self.version)) {
            (group, version) if group.is_empty() => version,
            (group, version) => format!("{group}/{version}"),
        };
        let mut text = format!("{group_version} {}", part(&self.kind));
        if let Some(namespace) = self.namespace.as_deref().filter(|n| !n.is_empty()) {
            text.push_str(&format!(" {namespace}/"));
        } else {
            text.push(' ');
        }
        text.push_str(&part(&self.name));
        text.trim().to_string()
    }
}

impl Level<'_> {
    /// Runs a kustomization's `replacements`, in order.
    pub(super) fn replace(&mut self, entries: &[ReplacementEntry]) -> Result<(), RenderError> {
        // What the entries wrote so far, against MAX_REPLACED_SIZE.
        let mut written = 0;
        for (index, entry) in entries.iter().enumerate() {
            let field = format!("replacements[{index}]");
            let inline = entry.source.is_some() || entry.targets.is_some();
            match &entry.path {
                Some(_) if inline => {
                    return Err(
                        self.error(field, "cannot specify both path and inline replacement")
                    );
                }
                Some(path) => {
                    for (position, replacement) in
                        self.replacement_file(path, &field)?.iter().enumerate()
                    {
                        let field = format!("{field}.path[{position}]");
                        self.replace_one(replacement, &field, &mut written)?;
                    }
                }
                None => self.replace_one(entry, &field, &mut written)?,
            }
        }
        Ok(())
    }

    /// The replacements in a `path:` file: one mapping or a list of them (first document).
    fn replacement_file(
        &self,
        path: &str,
        field: &str,
    ) -> Result<Vec<ReplacementEntry>, RenderError> {
        let (file, text) = self.read_relative(path)?;
        let documents = parse_documents(&text, &file)?;
        let items = match documents.into_iter().next() {
            Some((Value::Array(items), _)) => items,
            Some((map @ Value::Object(_), _)) => vec![map],
            other => {
                let found = other.map_or("nothing", |(value, _)| kind_of(&value));
                return Err(self.error(
                    format!("{field}.path"),
                    format!(
                        "{}: expected a replacement or a list of them, found {found}",
                        file.display()
                    ),
                ));
            }
        };
        items
            .into_iter()
            .enumerate()
            .map(|(position, item)| {
                let entry: ReplacementEntry = serde_json::from_value(item).map_err(|e| {
                    self.error(
                        format!("{field}.path[{position}]"),
                        format!("{}: {e}", file.display()),
                    )
                })?;
                if entry.path.is_some() {
                    return Err(self.error(
                        format!("{field}.path[{position}]"),
                        format!(
                            "{}: a replacement file cannot name another path",
                            file.display()
                        ),
                    ));
                }
                Ok(entry)
            })
            .collect()
    }

    fn replace_one(
        &mut self,
        entry: &ReplacementEntry,
        field: &str,
        written: &mut usize,
    ) -> Result<(), RenderError> {
        let (Some(source), Some(targets)) = (&entry.source, &entry.targets) else {
            return Err(self.error(
                field,
                "replacements must specify a source and at least one target",
            ));
        };
        let value = self.source_value(source, &format!("{field}.source"))?;
        for (index, target) in targets.iter().enumerate() {
            let field = format!("{field}.targets[{index}]");
            self.write_target(target, &value, &field, written)?;
        }
        Ok(())
    }

    /// The value the source selects, refined by its delimiter options.
    fn source_value(&self, source: &SourceSelector, field: &str) -> Result<Value, RenderError> {
        let id = id_target(
            &source.group,
            &source.version,
            &source.kind,
            &source.name,
            &source.namespace,
        );
        let selected = self.selected(&id, field)?;
        let index = match selected.as_slice() {
            [one] => *one,
            [] => {
                return Err(self.error(field, format!("nothing selected by {}", source.describe())));
            }
            many => {
                let names: Vec<String> = many
                    .iter()
                    .map(|i| self.resources[*i].object.object_ref().to_string())
                    .collect();
                return Err(self.error(
                    field,
                    format!(
                        "multiple matches for selector {}: {}",
                        source.describe(),
                        names.join(", ")
                    ),
                ));
            }
        };
        let path = source.field_path.as_deref().filter(|p| !p.is_empty());
        let path = path.unwrap_or(DEFAULT_FIELD_PATH);
        let path_field = format!("{field}.fieldPath");
        let parts = fieldpath::parse(path).map_err(|e| self.error(&path_field, chain(&e)))?;
        let object = &self.resources[index].object;
        let found = fieldpath::lookup(&object.value, &parts).map_err(|e| {
            self.error(
                &path_field,
                format!("error looking up replacement source: {}", chain(&e)),
            )
        })?;
        let value = match found {
            None | Some(Value::Null) => None,
            Some(Value::Object(map)) if map.is_empty() => None,
            Some(Value::Array(items)) if items.is_empty() => None,
            Some(value) => Some(value),
        };
        let Some(value) = value else {
            return Err(self.error(
                path_field,
                format!(
                    "fieldPath `{path}` is missing for replacement source {}",
                    object.object_ref()
                ),
            ));
        };
        let Some(options) = source.options.as_ref().filter(|o| !o.delimiter.is_empty()) else {
            return Ok(value.clone());
        };
        let Some(text) = scalar_text(value) else {
            return Err(self.error(
                format!("{field}.options"),
                "delimiter option can only be used with scalar nodes",
            ));
        };
        let pieces: Vec<&str> = text.split(options.delimiter.as_str()).collect();
        let piece = usize::try_from(options.index)
            .ok()
            .and_then(|i| pieces.get(i));
        let Some(piece) = piece else {
            return Err(self.error(
                format!("{field}.options.index"),
                format!(
                    "options.index {} is out of bounds for value {text}",
                    options.index
                ),
            ));
        };
        Ok(same_type(value, piece))
    }

    fn write_target(
        &mut self,
        target: &TargetSelector,
        value: &Value,
        field: &str,
        written: &mut usize,
    ) -> Result<(), RenderError> {
        let Some(select) = &target.select else {
            return Err(self.error(field, "target must specify resources to select"));
        };
        let mut chosen: BTreeSet<usize> =
            self.selected(&select.all(), field)?.into_iter().collect();
        for reject in &target.reject {
            // An id and selectors in one reject each reject on their own (kustomize).
            if reject.has_id() {
                for i in self.selected(&reject.id(), field)? {
                    chosen.remove(&i);
                }
            }
            if reject.has_selectors() {
                for i in self.selected(&reject.selectors(), field)? {
                    chosen.remove(&i);
                }
            }
        }
        if chosen.is_empty() {
            return Ok(());
        }
        let default_paths = [DEFAULT_FIELD_PATH.to_string()];
        let paths = if target.field_paths.is_empty() {
            &default_paths[..]
        } else {
            &target.field_paths[..]
        };
        let options = target.options.as_ref();
        let create = if options.is_some_and(|o| o.create) {
            Create::Yes
        } else {
            Create::No
        };
        let mut matchers = Vec::with_capacity(paths.len());
        for (index, path) in paths.iter().enumerate() {
            let path_field = format!("{field}.fieldPaths[{index}]");
            let matcher = fieldpath::parse(path)
                .and_then(Matcher::new)
                .map_err(|e| self.error(&path_field, format!("{path:?}: {}", chain(&e))))?;
            matchers.push((path, path_field, matcher));
        }
        let value_size = size(value);
        for i in chosen {
            for (path, path_field, matcher) in &matchers {
                let object = &mut self.resources[i].object;
                // Checked before each write, so the budget bounds memory too.
                let reached = matcher.apply(&mut object.value, create, &mut |slot| {
                    *written = written.saturating_add(value_size);
                    if *written > MAX_REPLACED_SIZE {
                        return Err(WriteError::OverBudget);
                    }
                    set_field(slot, value, options)
                });
                if let Err(WriteError::OverBudget) = reached {
                    let object = self.resources[i].object.object_ref();
                    return Err(self.error(
                        path_field,
                        format!(
                            "{object}: {path:?}: the replacements write more than \
                             {MAX_REPLACED_SIZE} bytes (a map copied into the object it \
                             comes from grows it exponentially)"
                        ),
                    ));
                }
                let what = match create {
                    Create::Yes => "unable to find or create field",
                    Create::No => "unable to find field",
                };
                let problem = match reached {
                    Ok(0) => Some(format!("{what} {path:?} in replacement target")),
                    Ok(_) => None,
                    Err(e) => Some(format!(
                        "{what} {path:?} in replacement target: {}",
                        chain(&e)
                    )),
                };
                if let Some(problem) = problem {
                    let object = self.resources[i].object.object_ref();
                    return Err(self.error(path_field, format!("{object}: {problem}")));
                }
            }
        }
        Ok(())
    }
}

/// Why a replacement could not write a reached target field.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    /// The target path cannot be followed in the object.
    #[error(transparent)]
    Path(#[from] FieldPathError),
    /// `options.delimiter` names a piece of a field that is not a scalar.
    #[error("delimiter option can only be used with scalar nodes")]
    NotScalar,
    /// The replacements have written [`MAX_REPLACED_SIZE`] bytes already.
    #[error("the replacements write more than {MAX_REPLACED_SIZE} bytes")]
    OverBudget,
}

/// `text` with the type of `like`: a string stays a string, a number or boolean is read again.
fn same_type(like: &Value, text: &str) -> Value {
    match like {
        Value::String(_) => Value::String(text.to_string()),
        _ => plain_scalar(text),
    }
}

/// Writes `value` into a reached field like kustomize: a scalar field keeps its type and takes
/// the value's text (so `replicas: 1` stays a number, `"1"` a string); a created (null) field
/// reads the text as plain YAML; a map or list field is replaced whole.
fn set_field(
    slot: &mut Value,
    value: &Value,
    options: Option<&FieldOptions>,
) -> Result<(), WriteError> {
    let mut value = value.clone();
    if let Some(options) = options.filter(|o| !o.delimiter.is_empty()) {
        let current = match &*slot {
            Value::Null => String::new(),
            other => scalar_text(other).ok_or(WriteError::NotScalar)?,
        };
        let mut pieces: Vec<String> = current
            .split(options.delimiter.as_str())
            .map(str::to_string)
            .collect();
        let piece = scalar_text(&value).unwrap_or_default();
        match usize::try_from(options.index) {
            Err(_) => pieces.insert(0, piece),
            Ok(index) if index >= pieces.len() => pieces.push(piece),
            Ok(index) => pieces[index] = piece,
        }
        value = same_type(&value, &pieces.join(&options.delimiter));
    }
    let text = scalar_text(&value);
    *slot = match (&*slot, text) {
        (Value::String(_), text) => Value::String(text.unwrap_or_default()),
        (Value::Number(_) | Value::Bool(_) | Value::Null, Some(text)) => plain_scalar(&text),
        (Value::Number(_) | Value::Bool(_), None) => Value::String(String::new()),
        _ => value,
    };
    Ok(())
}

#[cfg(test)]
mod tests {

    use crate::render::RenderError;

    const RESOURCES: &str = "\
apiVersion: v1
kind: ConfigMap
metadata: {name: src}
data: {host: a.example.com, port: \"80\"}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: other}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  template:
    spec:
      containers: [{name: app, image: nginx}]
";

    fn build_with(replacements: &str) -> Result<Vec<crate::object::Object>, RenderError> {
        super::super::tests::build_tree(&[
            ("res.yaml", RESOURCES),
            (
                "kustomization.yaml",
                &format!("resources: [res.yaml]\nreplacements:\n{replacements}"),
            ),
        ])
    }

    fn error_of(replacements: &str) -> String {
        build_with(replacements).unwrap_err().to_string()
    }

    #[test]
    fn replacements_that_grow_an_object_exponentially_are_refused() {
        // Shown with the kustomize_build fuzz target: each entry copies `spec` into two fields of
        // itself, tripling it; 25 entries took every byte of memory.
        let entry = "- source: {kind: Thing, name: t, fieldPath: spec}\n  targets: [{select: {kind: Thing}, fieldPaths: [spec.l, spec.r], options: {create: true}}]\n";
        let error = super::super::tests::build_tree(&[
            (
                "t.yaml",
                "apiVersion: x/v1\nkind: Thing\nmetadata: {name: t}\nspec: {a: 1}\n",
            ),
            (
                "kustomization.yaml",
                &format!("resources: [t.yaml]\nreplacements:\n{}", entry.repeat(25)),
            ),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("replacements write more than") && error.contains("Thing"),
            "{error}"
        );
        // A few such entries are still written.
        let objects = super::super::tests::build_tree(&[
            (
                "t.yaml",
                "apiVersion: x/v1\nkind: Thing\nmetadata: {name: t}\nspec: {a: 1}\n",
            ),
            (
                "kustomization.yaml",
                &format!("resources: [t.yaml]\nreplacements:\n{}", entry.repeat(3)),
            ),
        ])
        .unwrap();
        assert_eq!(objects[0].value["spec"]["l"]["l"]["l"]["a"], 1);
    }

    #[test]
    fn source_matching_nothing_or_several_objects_is_refused() {
        let none = error_of(
            "- source: {kind: ConfigMap, name: missing}\n  targets: [{select: {kind: Deployment}}]\n",
        );
        assert!(
            none.contains("replacements[0].source") && none.contains("nothing selected"),
            "{none}"
        );
        let many =
            error_of("- source: {kind: ConfigMap}\n  targets: [{select: {kind: Deployment}}]\n");
        assert!(
            many.contains("replacements[0].source") && many.contains("multiple matches"),
            "{many}"
        );
    }

    #[test]
    fn missing_fields_are_refused() {
        let source = error_of(
            "- source: {kind: ConfigMap, name: src, fieldPath: data.nope}\n  targets: [{select: {kind: Deployment}}]\n",
        );
        assert!(
            source.contains("replacements[0].source.fieldPath") && source.contains("is missing"),
            "{source}"
        );
        let target = error_of(
            "- source: {kind: ConfigMap, name: src, fieldPath: data.host}\n  targets:\n  - select: {kind: Deployment}\n    fieldPaths: [metadata.name, spec.template.spec.hostname]\n",
        );
        assert!(
            target.contains("replacements[0].targets[0].fieldPaths[1]")
                && target.contains("unable to find field"),
            "{target}"
        );
    }

    #[test]
    fn malformed_entries_are_refused() {
        let both = error_of("- path: r.yaml\n  source: {kind: ConfigMap, name: src}\n");
        assert!(both.contains("cannot specify both path"), "{both}");
        let no_targets = error_of("- source: {kind: ConfigMap, name: src}\n");
        assert!(no_targets.contains("at least one target"), "{no_targets}");
        let no_select = error_of(
            "- source: {kind: ConfigMap, name: src}\n  targets: [{fieldPaths: [metadata.name]}]\n",
        );
        assert!(
            no_select.contains("replacements[0].targets[0]")
                && no_select.contains("must specify resources to select"),
            "{no_select}"
        );
        let index = error_of(
            "- source: {kind: ConfigMap, name: src, fieldPath: data.host, options: {delimiter: '.', index: 5}}\n  targets: [{select: {kind: Deployment}}]\n",
        );
        assert!(index.contains("out of bounds"), "{index}");
        let wrong_kind = error_of(
            "- source: {kind: ConfigMap, name: src, fieldPath: data.host}\n  targets:\n  - select: {kind: Deployment}\n    fieldPaths: [spec.template.spec.containers.name]\n",
        );
        assert!(wrong_kind.contains("expected a map"), "{wrong_kind}");
    }

    #[test]
    fn delimiter_index_prefix_and_suffix() {
        let objects = build_with(
            "- source: {kind: ConfigMap, name: src, fieldPath: data.host, options: {delimiter: '.', index: 0}}\n  targets:\n  - select: {kind: ConfigMap, name: other}\n    fieldPaths: [data.x, data.y]\n    options: {create: true, delimiter: '-', index: -1}\n",
        )
        .unwrap();
        let other = objects.iter().find(|o| o.name() == "other").unwrap();
        assert_eq!(other.value["data"]["x"], "a-");
    }
}
