//! Render: a path of the fleet repo -> every object it declares ([`Rendered`]).
//!
//! Pure: reads files below the repository root and nothing else (no network, no clusters).
//! Like Flux, a path with a `kustomization.yaml` is built with the kustomize subset in
//! [`kustomize`]; any other directory is walked, every `*.yaml` / `*.yml` file is loaded in path
//! order, and a sub-directory with its own kustomization is built as one unit and not descended.

mod fieldpath;
pub mod helm;
pub mod kustomize;
pub mod load;
pub(crate) mod merge;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::object::{Object, ObjectRef, Origin};
pub use load::Repo;

/// Everything a fleet path declares, in a stable order.
#[derive(Debug, Clone, Default)]
pub struct Rendered {
    /// The objects, each with the file and document it came from.
    pub objects: Vec<Object>,
}

/// Why a path could not be rendered. Every variant names the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A file or directory could not be read.
    #[error("{}: cannot read", path.display())]
    Read {
        /// Root-relative path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file is larger than Flotilla reads.
    #[error("{}: {size} bytes is over the limit of {limit} bytes", path.display())]
    TooLarge {
        /// Root-relative path.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A reference leaves the repository root (through `..`, an absolute path or a symlink).
    #[error("{}: {reference}: resolves outside the repository root", path.display())]
    PathEscape {
        /// The file that holds the reference.
        path: PathBuf,
        /// The reference as written.
        reference: String,
    },
    /// A kustomization names a remote resource.
    #[error(
        "{}: {reference}: remote resources are not supported; vendor them into the repository",
        path.display()
    )]
    RemoteResource {
        /// The kustomization file.
        path: PathBuf,
        /// The URL as written.
        reference: String,
    },
    /// A file is not valid YAML.
    #[error("{}:{line}: {message}", path.display())]
    Yaml {
        /// Root-relative path.
        path: PathBuf,
        /// 1-based line (0 when unknown).
        line: usize,
        /// The parser's message.
        message: String,
    },
    /// A document is not a usable Kubernetes object.
    #[error("{origin}: {field}: {problem}")]
    InvalidObject {
        /// Where the document is.
        origin: Origin,
        /// The field at fault.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A kustomization file has a field Flotilla cannot use.
    #[error("{}: {field}: {problem}", path.display())]
    Kustomization {
        /// The kustomization file.
        path: PathBuf,
        /// The field at fault, as a dotted path.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A patch could not be applied to an object.
    #[error("{}: {field}: patching {object}: {problem}", path.display())]
    Patch {
        /// The kustomization file.
        path: PathBuf,
        /// Which patch (`patches[2]`).
        field: String,
        /// The object being patched.
        object: ObjectRef,
        /// What failed.
        problem: String,
    },
    /// Two documents declare the same object.
    #[error("{object}: declared twice, in {first} and in {second}")]
    Duplicate {
        /// The object.
        object: ObjectRef,
        /// The first declaration.
        first: Origin,
        /// The second declaration.
        second: Origin,
    },
}

impl RenderError {
    /// A fixed, low-cardinality name for this error, fit for a metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            RenderError::Read { .. } => "read",
            RenderError::TooLarge { .. } => "too_large",
            RenderError::PathEscape { .. } => "path_escape",
            RenderError::RemoteResource { .. } => "remote_resource",
            RenderError::Yaml { .. } => "yaml",
            RenderError::InvalidObject { .. } => "invalid_object",
            RenderError::Kustomization { .. } => "kustomization",
            RenderError::Patch { .. } => "patch",
            RenderError::Duplicate { .. } => "duplicate",
        }
    }
}

/// Names kustomize recognises for a kustomization file, in its order of preference.
pub const KUSTOMIZATION_FILE_NAMES: &[&str] =
    &["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// Renders `path` (relative to the repository `root`, or absolute below it).
pub fn render_tree(root: &Path, path: &Path) -> Result<Rendered, RenderError> {
    let repo = Repo::open(root)?;
    let origin = Path::new(".");
    let relative = repo.resolve(Path::new(""), path.to_str().unwrap_or_default(), origin)?;
    let objects = if repo.absolute(&relative).is_dir() {
        match kustomization_file(&repo, &relative) {
            Some(_) => kustomize::build(&repo, &relative)?,
            None => walk_directory(&repo, &relative)?,
        }
    } else {
        repo.load_objects(&relative)?
    };
    check_unique(&objects)?;
    Ok(Rendered { objects })
}

/// The kustomization file of a directory, if it has one.
pub fn kustomization_file(repo: &Repo, dir: &Path) -> Option<PathBuf> {
    KUSTOMIZATION_FILE_NAMES
        .iter()
        .map(|name| dir.join(name))
        .find(|candidate| repo.absolute(candidate).is_file())
}

/// Loads every YAML file below `dir` in path order, building sub-kustomizations as units.
fn walk_directory(repo: &Repo, dir: &Path) -> Result<Vec<Object>, RenderError> {
    walk_directory_at(repo, dir, 0)
}

/// Directories deeper than this below the fleet path are refused (a deep tree, or a chain of
/// symlinks, must not overflow the stack).
pub const MAX_DEPTH: usize = 64;

fn walk_directory_at(repo: &Repo, dir: &Path, depth: usize) -> Result<Vec<Object>, RenderError> {
    if depth > MAX_DEPTH {
        return Err(RenderError::Read {
            path: dir.to_path_buf(),
            source: std::io::Error::other(format!(
                "more than {MAX_DEPTH} directories deep below the fleet path"
            )),
        });
    }
    let mut entries: Vec<_> = std::fs::read_dir(repo.absolute(dir))
        .map_err(|source| RenderError::Read {
            path: dir.to_path_buf(),
            source,
        })?
        .filter_map(Result::ok)
        .map(|entry| entry.file_name())
        .collect();
    entries.sort();
    let mut objects = Vec::new();
    for name in entries {
        let name = name.to_string_lossy();
        // Dot-directories are tooling (.git, .github), never fleet content.
        if name.starts_with('.') {
            continue;
        }
        // Resolving through the repo keeps symlinks from leading outside the root.
        let relative = repo.resolve(dir, &name, dir)?;
        let absolute = repo.absolute(&relative);
        if absolute.is_dir() {
            // A symlink to this directory or one above it (`loop -> ..`) would be walked
            // forever: what it leads to is being walked already.
            if dir.starts_with(&relative) {
                continue;
            }
            match kustomization_file(repo, &relative) {
                Some(_) => objects.extend(kustomize::build(repo, &relative)?),
                None => objects.extend(walk_directory_at(repo, &relative, depth + 1)?),
            }
        } else if name.ends_with(".yaml") || name.ends_with(".yml") {
            objects.extend(repo.load_objects(&relative)?);
        }
    }
    Ok(objects)
}

/// Refuses two declarations of one object: the second would silently win otherwise.
pub fn check_unique(objects: &[Object]) -> Result<(), RenderError> {
    let mut seen: BTreeMap<ObjectRef, &Origin> = BTreeMap::new();
    for object in objects {
        if let Some(first) = seen.insert(object.object_ref(), &object.origin) {
            return Err(RenderError::Duplicate {
                object: object.object_ref(),
                first: first.clone(),
                second: object.origin.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Writes `text` to `path` below `root`, creating its directories.
    pub(crate) fn write(root: &Path, path: &str, text: &str) {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: NAME\n";

    #[test]
    fn walk_takes_yaml_in_path_order_and_builds_kustomizations_as_units() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "b.yaml", &CM.replace("NAME", "b"));
        write(root, "a.yml", &CM.replace("NAME", "a"));
        write(root, "notes.txt", "not yaml");
        write(root, ".github/ci.yaml", "on: push\n");
        write(
            root,
            "app/kustomization.yaml",
            "resources: [base]\nnamePrefix: p-\n",
        );
        write(
            root,
            "app/base/kustomization.yaml",
            "resources: [cm.yaml]\n",
        );
        write(root, "app/base/cm.yaml", &CM.replace("NAME", "c"));
        let rendered = render_tree(root, Path::new(".")).unwrap();
        let names: Vec<_> = rendered.objects.iter().map(Object::name).collect();
        assert_eq!(names, ["a", "p-c", "b"]);
        assert_eq!(rendered.objects[0].origin.path, Path::new("a.yml"));
    }

    #[test]
    fn symlink_loops_and_deep_nesting_are_refused_not_overflowed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "apps/a.yaml", &CM.replace("NAME", "a"));
        std::os::unix::fs::symlink("..", root.join("apps/loop")).unwrap();
        std::os::unix::fs::symlink(".", root.join("apps/self")).unwrap();
        let rendered = render_tree(root, Path::new(".")).unwrap();
        assert_eq!(rendered.objects.len(), 1, "each file once");
        // A chain of kustomizations deeper than MAX_DEPTH.
        let deep = tempfile::tempdir().unwrap();
        let mut path = String::new();
        for level in 0..=MAX_DEPTH + 1 {
            write(
                deep.path(),
                &format!("{path}kustomization.yaml"),
                if level == MAX_DEPTH + 1 {
                    "resources: []\n"
                } else {
                    "resources: [next]\n"
                },
            );
            path.push_str("next/");
        }
        let error = render_tree(deep.path(), Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(error.contains("kustomizations nested"), "{error}");
        // And plain directories deeper than MAX_DEPTH.
        let tall = tempfile::tempdir().unwrap();
        let dirs = "d/".repeat(MAX_DEPTH + 2);
        write(
            tall.path(),
            &format!("{dirs}x.yaml"),
            &CM.replace("NAME", "x"),
        );
        let error = render_tree(tall.path(), Path::new(".")).unwrap_err();
        let source = std::error::Error::source(&error).map(ToString::to_string);
        assert!(
            source
                .as_deref()
                .is_some_and(|s| s.contains("directories deep")),
            "{error}: {source:?}"
        );
    }

    #[test]
    fn duplicate_objects_name_both_files() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "one.yaml", &CM.replace("NAME", "x"));
        write(dir.path(), "two.yaml", &CM.replace("NAME", "x"));
        let error = render_tree(dir.path(), Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("one.yaml") && error.contains("two.yaml"),
            "{error}"
        );
    }
}
