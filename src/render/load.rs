//! Reading files of the fleet repo: bounded, confined to the repository root, and parsed as the
//! YAML 1.1 that Kubernetes reads (`0644` is 420, `yes` is true).

use std::path::{Component, Path, PathBuf};

use serde_json::Value;
use serde_saphyr::Spanned;

use super::RenderError;
use crate::object::{Object, Origin};

/// Largest file Flotilla reads (the largest real CRDs are under 1 MiB).
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// Alias expansions allowed per file: plenty for hand-written YAML, far below a "billion laughs".
const MAX_REPLAYED_ALIAS_EVENTS: usize = 100_000;

/// The repository on disk: every path Flotilla reads is resolved against it and must stay inside.
#[derive(Debug, Clone)]
pub struct Repo {
    root: PathBuf,
}

impl Repo {
    /// Opens the repository rooted at `root` (which must exist).
    pub fn open(root: &Path) -> Result<Self, RenderError> {
        let root = root.canonicalize().map_err(|source| RenderError::Read {
            path: root.to_path_buf(),
            source,
        })?;
        Ok(Repo { root })
    }

    /// The canonical root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Resolves `reference` (as written in a kustomization or on the command line) relative to
    /// the directory `base` (itself relative to the root) and returns the path relative to the
    /// root. Refuses URLs and anything that leaves the root, also through symlinks.
    pub fn resolve(
        &self,
        base: &Path,
        reference: &str,
        referenced_from: &Path,
    ) -> Result<PathBuf, RenderError> {
        if looks_remote(reference) {
            return Err(RenderError::RemoteResource {
                path: referenced_from.to_path_buf(),
                reference: reference.to_string(),
            });
        }
        let joined = if Path::new(reference).is_absolute() {
            PathBuf::from(reference)
        } else {
            self.root.join(base).join(reference)
        };
        let escape = || RenderError::PathEscape {
            path: referenced_from.to_path_buf(),
            reference: reference.to_string(),
        };
        // Normalise lexically first so that a missing file still gets a precise error.
        let lexical = normalize(&joined).ok_or_else(escape)?;
        if !lexical.starts_with(&self.root) {
            return Err(escape());
        }
        let real = match lexical.canonicalize() {
            Ok(real) => real,
            Err(source) => {
                return Err(RenderError::Read {
                    path: lexical
                        .strip_prefix(&self.root)
                        .unwrap_or(&lexical)
                        .to_path_buf(),
                    source,
                });
            }
        };
        // A symlink may point outside even when the written path does not.
        let relative = real.strip_prefix(&self.root).map_err(|_| escape())?;
        Ok(relative.to_path_buf())
    }

    /// The absolute path of a root-relative path.
    pub fn absolute(&self, relative: &Path) -> PathBuf {
        self.root.join(relative)
    }

    /// Reads a root-relative file as UTF-8, refusing files over [`MAX_FILE_BYTES`].
    pub fn read_to_string(&self, relative: &Path) -> Result<String, RenderError> {
        let read_error = |source| RenderError::Read {
            path: relative.to_path_buf(),
            source,
        };
        let absolute = self.absolute(relative);
        let size = std::fs::metadata(&absolute).map_err(read_error)?.len();
        if size > MAX_FILE_BYTES {
            return Err(RenderError::TooLarge {
                path: relative.to_path_buf(),
                size,
                limit: MAX_FILE_BYTES,
            });
        }
        std::fs::read_to_string(&absolute).map_err(read_error)
    }

    /// Reads and parses every YAML document of a root-relative file.
    pub fn load_objects(&self, relative: &Path) -> Result<Vec<Object>, RenderError> {
        let text = self.read_to_string(relative)?;
        parse_objects(&text, relative)
    }

    /// [`Repo::load_objects`] for a kustomization's resources (YAML 1.2 core booleans).
    pub fn load_kustomize_objects(&self, relative: &Path) -> Result<Vec<Object>, RenderError> {
        let text = self.read_to_string(relative)?;
        parse_kustomize_objects(&text, relative)
    }
}

fn looks_remote(reference: &str) -> bool {
    let lower = reference.to_ascii_lowercase();
    lower.contains("://")
        || lower.starts_with("git@")
        || lower.starts_with("github.com/")
        || lower.starts_with("gitlab.com/")
        || lower.starts_with("bitbucket.org/")
}

/// Removes `.` and resolves `..` lexically; `None` if `..` climbs above the filesystem root.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    Some(out)
}

/// The parser options every fleet file is read with. `yes`, `no`, `on`, `off`, `y` and `n`
/// are booleans to kubectl (YAML 1.1) but strings to kustomize's kyaml (YAML 1.2 core
/// booleans), so resources and patches of a kustomization are read with `core_booleans`.
fn yaml_options(core_booleans: bool) -> serde_saphyr::Options {
    serde_saphyr::options! {
        legacy_octal_numbers: true,
        strict_booleans: core_booleans,
        with_snippet: false,
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: MAX_REPLAYED_ALIAS_EVENTS,
            max_replay_stack_depth: 16,
        },
    }
}

/// Parses YAML text into values, one per non-empty document, each with its starting line.
pub fn parse_documents(text: &str, path: &Path) -> Result<Vec<(Value, usize)>, RenderError> {
    parse_documents_with(text, path, false)
}

/// [`parse_documents`] as kustomize reads resources and patches (YAML 1.2 core booleans).
pub fn parse_kustomize_documents(
    text: &str,
    path: &Path,
) -> Result<Vec<(Value, usize)>, RenderError> {
    parse_documents_with(text, path, true)
}

fn parse_documents_with(
    text: &str,
    path: &Path,
    core_booleans: bool,
) -> Result<Vec<(Value, usize)>, RenderError> {
    let documents: Vec<Spanned<Value>> =
        serde_saphyr::from_multiple_with_options(text, yaml_options(core_booleans)).map_err(
            |error| RenderError::Yaml {
                path: path.to_path_buf(),
                line: error.location().map(|l| l.line() as usize).unwrap_or(0),
                message: yaml_message(&error),
            },
        )?;
    let mut documents = documents;
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

/// The path of the text's last scalar when it is a block scalar (`|`, `>`) that ends the text
/// without a final line break. The YAML parser under serde-saphyr ends such a scalar with a line
/// break the text does not have (kustomize's parser does not), which changes a ConfigMap's data.
fn final_block_scalar(text: &str) -> Option<Vec<Step>> {
    use granit_parser::{Event, Parser, ScalarStyle};
    if text.ends_with('\n') || !(text.contains('|') || text.contains('>')) {
        return None;
    }
    /// A collection being read: a mapping (with the key of the value to come) or a sequence.
    enum Frame {
        Mapping { key: Option<String> },
        Sequence { next: usize },
    }
    let mut frames: Vec<Frame> = Vec::new();
    let mut path: Vec<Step> = Vec::new();
    let mut last_block: Option<Vec<Step>> = None;
    for event in Parser::new_from_str(text) {
        let (event, _) = event.ok()?;
        let is_node = matches!(
            event,
            Event::Scalar(..)
                | Event::SequenceStart(..)
                | Event::MappingStart(..)
                | Event::Alias(_)
        );
        if !is_node {
            if matches!(event, Event::SequenceEnd | Event::MappingEnd) {
                frames.pop();
                // The root collection has no step of its own.
                if !frames.is_empty() {
                    path.pop();
                }
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
                    last_block = None;
                    continue;
                }
                Some(key) => Some(Step::Key(key)),
            },
            Some(Frame::Sequence { next }) => {
                *next += 1;
                Some(Step::Index(*next - 1))
            }
            None => None,
        };
        match event {
            Event::Scalar(_, style, ..) => {
                last_block = matches!(style, ScalarStyle::Literal | ScalarStyle::Folded)
                    .then(|| path.iter().cloned().chain(step).collect());
            }
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                last_block = None;
                frames.push(if matches!(event, Event::SequenceStart(..)) {
                    Frame::Sequence { next: 0 }
                } else {
                    Frame::Mapping { key: None }
                });
                path.extend(step);
            }
            _ => last_block = None,
        }
    }
    last_block
}

fn value_at_mut<'a>(value: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    path.iter().try_fold(value, |value, step| match step {
        Step::Key(key) => value.get_mut(key.as_str()),
        Step::Index(index) => value.get_mut(*index),
    })
}

/// Parses every YAML document of a file into objects; each must be a mapping with a kind.
pub fn parse_objects(text: &str, path: &Path) -> Result<Vec<Object>, RenderError> {
    objects_of(parse_documents(text, path)?, path)
}

/// [`parse_objects`] as kustomize reads resources (YAML 1.2 core booleans).
pub fn parse_kustomize_objects(text: &str, path: &Path) -> Result<Vec<Object>, RenderError> {
    objects_of(parse_kustomize_documents(text, path)?, path)
}

fn objects_of(documents: Vec<(Value, usize)>, path: &Path) -> Result<Vec<Object>, RenderError> {
    let mut objects = Vec::new();
    for (index, (value, line)) in documents.into_iter().enumerate() {
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
                objects.push(checked_object(item.clone(), origin.clone())?);
            }
            continue;
        }
        objects.push(checked_object(value, origin)?);
    }
    Ok(objects)
}

fn checked_object(value: Value, origin: Origin) -> Result<Object, RenderError> {
    for field in ["apiVersion", "kind"] {
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
    Ok(Object::new(value, origin))
}

/// The parser's message without its own position suffix (we print `path:line:` ourselves).
fn yaml_message(error: &serde_saphyr::Error) -> String {
    let text = error.to_string();
    let first = text.lines().next().unwrap_or("").trim();
    match first.rfind(" at line ") {
        Some(at) => first[..at].to_string(),
        None => first.to_string(),
    }
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
    fn kustomize_resources_keep_yaml_11_booleans_as_strings() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {a: yes, b: on, c: n}\nmode: 0644\nflag: True\n";
        let objects = parse_kustomize_objects(text, Path::new("apps/x.yaml")).unwrap();
        let value = &objects[0].value;
        assert_eq!(
            value["data"],
            serde_json::json!({"a": "yes", "b": "on", "c": "n"})
        );
        assert_eq!(value["mode"], 420);
        assert_eq!(value["flag"], true);
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
    }

    #[test]
    fn paths_and_symlinks_outside_the_root_are_refused() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.yaml"), "a: 1\n").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("apps")).unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("secret.yaml"),
            root.path().join("apps/link.yaml"),
        )
        .unwrap();
        let repo = Repo::open(root.path()).unwrap();
        let from = Path::new("apps/kustomization.yaml");
        for reference in ["../../etc/passwd", "link.yaml", "/etc/passwd"] {
            let error = repo
                .resolve(Path::new("apps"), reference, from)
                .unwrap_err();
            assert!(
                matches!(error, RenderError::PathEscape { .. }),
                "{reference}: {error}"
            );
        }
        let error = repo
            .resolve(Path::new("apps"), "https://github.com/x/y//base", from)
            .unwrap_err();
        assert!(matches!(error, RenderError::RemoteResource { .. }));
    }

    #[test]
    fn oversized_files_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(root.path().join("big.yaml")).unwrap();
        file.set_len(MAX_FILE_BYTES + 1).unwrap();
        let repo = Repo::open(root.path()).unwrap();
        let error = repo.load_objects(Path::new("big.yaml")).unwrap_err();
        assert!(matches!(error, RenderError::TooLarge { .. }), "{error}");
    }
}
