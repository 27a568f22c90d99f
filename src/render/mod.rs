//! Render: a path of the fleet repo -> every object it declares ([`Rendered`]).
//!
//! Pure: reads files below the repository root and nothing else (no network, no clusters).
//! Like Flux, a path with a `kustomization.yaml` is built with the kustomize subset in
//! [`kustomize`]; any other directory is walked, every `*.yaml` / `*.yml` file is loaded in path
//! order, and a sub-directory with its own kustomization is built as one unit and not descended.
//!
//! [`load`] reads and parses files within the repository root; [`kustomize`] builds a
//! kustomization, with [`helm`] for its `helmCharts`; `merge` (strategic merge patches) and
//! `fieldpath` (kustomize's dotted field paths) serve the build. Every failure is a
//! [`RenderError`] naming the file; the typed problems of the steps below it ([`MergeError`],
//! [`helm::HelmError`], ...) reach it with their causes written into its message.

mod fieldpath;
pub mod helm;
pub mod kustomize;
pub mod load;
pub(crate) mod merge;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::limits::RenderLimits;
use crate::object::{Object, ObjectRef, Origin};
pub use load::Repo;
pub use merge::MergeError;

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
    #[error(
        "{}: {size} bytes is over the limit of {limit} bytes per file (raise it with --max-file-size)",
        path.display()
    )]
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
    /// A limit of the render was reached (objects, nesting, bytes read).
    #[error("{}: {what} (raise the limit with {flag})", path.display())]
    Limit {
        /// Where it was reached: the file or directory being read.
        path: PathBuf,
        /// Which limit, with its value.
        what: String,
        /// The command-line flag that raises it.
        flag: &'static str,
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
            RenderError::Limit { .. } => "limit",
            RenderError::Duplicate { .. } => "duplicate",
        }
    }

    /// Whether rendering the same commit again may succeed. A render reads one commit's files
    /// and nothing else, so it fails the same way every time - a broken kustomization waits for
    /// the next commit - except when reading a file was interrupted or timed out
    /// ([`RenderError::Read`] with an I/O error of kind `Interrupted`, `WouldBlock` or
    /// `TimedOut`). A missing file or a denied permission stays missing or denied.
    pub fn is_retryable(&self) -> bool {
        match self {
            RenderError::Read { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::WouldBlock
                    | std::io::ErrorKind::TimedOut
            ),
            RenderError::TooLarge { .. }
            | RenderError::PathEscape { .. }
            | RenderError::RemoteResource { .. }
            | RenderError::Yaml { .. }
            | RenderError::InvalidObject { .. }
            | RenderError::Kustomization { .. }
            | RenderError::Patch { .. }
            | RenderError::Limit { .. }
            | RenderError::Duplicate { .. } => false,
        }
    }
}

/// Names kustomize recognises for a kustomization file, in its order of preference.
pub const KUSTOMIZATION_FILE_NAMES: &[&str] =
    &["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// Renders `path` (relative to the repository `root`, or absolute below it) within the default
/// [`RenderLimits`].
pub fn render_tree(root: &Path, path: &Path) -> Result<Rendered, RenderError> {
    render_tree_with(root, path, RenderLimits::default())
}

/// Stack for the render's own thread: each level of nesting is a few recursive frames (about
/// 30 KiB unoptimised), and whoever calls may have little stack left (the agent calls from a
/// 2 MiB blocking-pool thread). Only the pages used are ever committed.
fn render_stack_size(limits: &RenderLimits) -> usize {
    (8 << 20) + limits.max_depth.saturating_mul(64 << 10)
}

/// [`render_tree`] within `limits`. The render runs on a thread of its own whose stack fits
/// `limits.max_depth`, so no nesting the limits allow can overflow the caller's stack.
pub fn render_tree_with(
    root: &Path,
    path: &Path,
    limits: RenderLimits,
) -> Result<Rendered, RenderError> {
    let failed = |problem: &str| RenderError::Read {
        path: path.to_path_buf(),
        source: std::io::Error::other(problem.to_string()),
    };
    std::thread::scope(|scope| {
        let render = std::thread::Builder::new()
            .name("render".into())
            .stack_size(render_stack_size(&limits))
            .spawn_scoped(scope, || render_on_this_thread(root, path, limits))
            .map_err(|error| failed(&format!("starting the render thread: {error}")))?;
        render
            .join()
            .unwrap_or_else(|_| Err(failed("the render panicked (a bug in Flotilla)")))
    })
}

fn render_on_this_thread(
    root: &Path,
    path: &Path,
    limits: RenderLimits,
) -> Result<Rendered, RenderError> {
    let repo = Repo::open_with(root, limits)?;
    let origin = Path::new(".");
    let relative = repo.resolve_os(Path::new(""), path.as_os_str(), origin)?;
    let objects = if repo.absolute(&relative).is_dir() {
        match kustomization_file(&repo, &relative)? {
            Some(_) => kustomize::build(&repo, &relative)?,
            None => walk_directory(&repo, &relative)?,
        }
    } else {
        repo.load_objects(&relative)?
    };
    check_unique(&objects)?;
    Ok(Rendered { objects })
}

/// The kustomization file of a directory, if it has one. Two or more are an error, as in
/// kustomize ("Found multiple kustomization files"): which one a build means is ambiguous.
pub fn kustomization_file(repo: &Repo, dir: &Path) -> Result<Option<PathBuf>, RenderError> {
    let mut found = KUSTOMIZATION_FILE_NAMES
        .iter()
        .map(|name| dir.join(name))
        .filter(|candidate| repo.absolute(candidate).is_file());
    let first = found.next();
    if let (Some(first), Some(second)) = (&first, found.next()) {
        return Err(RenderError::Kustomization {
            path: first.clone(),
            field: "(file)".into(),
            problem: format!(
                "{} is a kustomization file too: a directory may have only one, as in kustomize",
                second.display()
            ),
        });
    }
    Ok(first)
}

/// Loads every YAML file below `dir` in path order, building sub-kustomizations as units.
fn walk_directory(repo: &Repo, dir: &Path) -> Result<Vec<Object>, RenderError> {
    walk_directory_at(repo, dir, 0)
}

/// The default of `--max-depth`: directories deeper than this below the fleet path, or
/// kustomizations nested deeper, are refused (a deep tree, or a chain of symlinks, must not
/// overflow the stack).
pub const MAX_DEPTH: usize = 64;

fn walk_directory_at(repo: &Repo, dir: &Path, depth: usize) -> Result<Vec<Object>, RenderError> {
    let limit = repo.limits().max_depth;
    if depth > limit {
        return Err(RenderError::Limit {
            path: dir.to_path_buf(),
            what: format!("more than {limit} directories deep below the fleet path"),
            flag: "--max-depth",
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
        // Names are bytes on Linux, not always UTF-8: they are matched and resolved as bytes
        // (a lossy copy would name a file that does not exist).
        let bytes = name.as_encoded_bytes();
        // Dot-directories are tooling (.git, .github), never fleet content.
        if bytes.starts_with(b".") {
            continue;
        }
        // Resolving through the repo keeps symlinks from leading outside the root.
        let relative = repo.resolve_os(dir, &name, dir)?;
        let absolute = repo.absolute(&relative);
        if absolute.is_dir() {
            // A symlink to this directory or one above it (`loop -> ..`) would be walked
            // forever: what it leads to is being walked already.
            if dir.starts_with(&relative) {
                continue;
            }
            match kustomization_file(repo, &relative)? {
                Some(_) => objects.extend(kustomize::build(repo, &relative)?),
                None => objects.extend(walk_directory_at(repo, &relative, depth + 1)?),
            }
        } else if bytes.ends_with(b".yaml") || bytes.ends_with(b".yml") {
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
        let error = render_tree(tall.path(), Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("directories deep") && error.contains("--max-depth"),
            "{error}"
        );
    }

    #[test]
    fn the_deepest_nesting_max_depth_allows_fits_the_agents_render_thread() {
        // The agent renders from a blocking-pool thread (2 MiB of stack, too little for 96
        // nested kustomizations unoptimised); --max-depth allows up to MAX_DEPTH_CEILING, and
        // that much must render from there, kustomizations and directories both (unoptimised
        // here, so with frames larger than a release build's).
        let ceiling = crate::limits::MAX_DEPTH_CEILING;
        let kustomized = tempfile::tempdir().unwrap();
        let mut path = String::new();
        for level in 0..ceiling {
            let resources = if level + 1 == ceiling {
                "[cm.yaml]"
            } else {
                "[next]"
            };
            write(
                kustomized.path(),
                &format!("{path}kustomization.yaml"),
                &format!("resources: {resources}\n"),
            );
            path.push_str("next/");
        }
        let last = &path[..path.len() - "next/".len()];
        write(
            kustomized.path(),
            &format!("{last}cm.yaml"),
            &CM.replace("NAME", "deep"),
        );
        let tall = tempfile::tempdir().unwrap();
        write(
            tall.path(),
            &format!("{}x.yaml", "d/".repeat(ceiling)),
            &CM.replace("NAME", "x"),
        );
        let limits = RenderLimits {
            max_depth: ceiling,
            ..RenderLimits::default()
        };
        let roots = [kustomized.path().to_path_buf(), tall.path().to_path_buf()];
        let rendered = std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(move || {
                roots
                    .iter()
                    .map(|root| {
                        render_tree_with(root, Path::new("."), limits).map(|r| r.objects.len())
                    })
                    .collect::<Vec<_>>()
            })
            .unwrap()
            .join()
            .expect("no stack overflow");
        assert!(matches!(rendered[..], [Ok(1), Ok(1)]), "{rendered:?}");
    }

    #[test]
    fn objects_are_counted_as_they_load_shared_bases_each_time() {
        // A base built by two overlays is loaded twice: 2 x 3 objects against a limit of 5.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let three = ["a", "b", "c"]
            .map(|name| CM.replace("NAME", name))
            .join("---\n");
        write(root, "base/cms.yaml", &three);
        write(root, "base/kustomization.yaml", "resources: [cms.yaml]\n");
        for overlay in ["one", "two"] {
            write(
                root,
                &format!("{overlay}/kustomization.yaml"),
                &format!("resources: [../base]\nnamePrefix: {overlay}-\n"),
            );
        }
        write(root, "kustomization.yaml", "resources: [one, two]\n");
        let limits = |max_objects| RenderLimits {
            max_objects,
            ..RenderLimits::default()
        };
        let error = render_tree_with(root, Path::new("."), limits(5))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("base/cms.yaml")
                && error.contains("more than 5 objects")
                && error.contains("--max-objects"),
            "{error}"
        );
        let rendered = render_tree_with(root, Path::new("."), limits(6)).unwrap();
        assert_eq!(rendered.objects.len(), 6);
        // Generated objects count too (a kustomization of generators is otherwise bounded
        // only by its file size).
        let generators: String = (0..6)
            .map(|i| format!("- {{name: g{i}, literals: [k=v]}}\n"))
            .collect();
        write(
            root,
            "generated/kustomization.yaml",
            &format!("configMapGenerator:\n{generators}"),
        );
        let error = render_tree_with(root, Path::new("generated"), limits(5))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("generated/kustomization.yaml") && error.contains("--max-objects"),
            "{error}"
        );
        let rendered = render_tree_with(root, Path::new("generated"), limits(6)).unwrap();
        assert_eq!(rendered.objects.len(), 6);
    }

    #[test]
    fn only_interrupted_or_timed_out_reads_are_retryable() {
        let read = |kind: std::io::ErrorKind| RenderError::Read {
            path: PathBuf::from("a.yaml"),
            source: std::io::Error::from(kind),
        };
        assert!(read(std::io::ErrorKind::TimedOut).is_retryable());
        assert!(read(std::io::ErrorKind::Interrupted).is_retryable());
        assert!(read(std::io::ErrorKind::WouldBlock).is_retryable());
        assert!(!read(std::io::ErrorKind::NotFound).is_retryable());
        assert!(!read(std::io::ErrorKind::PermissionDenied).is_retryable());
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "kustomization.yaml",
            "resources: [missing.yaml]\n",
        );
        let error = render_tree(dir.path(), Path::new(".")).unwrap_err();
        assert!(!error.is_retryable(), "{error}");
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
