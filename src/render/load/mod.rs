//! Reading files of the fleet repo: bounded, confined to the repository root ([`Repo`]), and
//! parsed (`parse`) as the YAML 1.1 that Kubernetes reads (`0644` is 420, `yes` is true), or,
//! for what kustomize reads with kyaml (resources, patches), with YAML 1.2 booleans (`yes` is a
//! string).

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::RenderError;
use crate::limits::{RenderLimits, show_size};
use crate::object::Object;

mod parse;

use parse::count_objects_in;

pub use parse::{
    Dialect, parse_documents, parse_documents_with, parse_objects, parse_objects_with,
};
pub(crate) use parse::{yaml_options, yaml11_booleans};

/// Largest file Flotilla reads by default (the largest real CRDs are under 1 MiB); the
/// parser's node and event budget is sized from it.
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// The repository on disk: every path Flotilla reads is resolved against it and must stay inside.
/// It also keeps the render's [`RenderLimits`] and what has been spent of them (shared by
/// clones: one render, one budget).
#[derive(Debug, Clone)]
pub struct Repo {
    root: PathBuf,
    limits: RenderLimits,
    spent: Arc<Spent>,
}

/// What one render has used of its limits.
#[derive(Debug, Default)]
struct Spent {
    objects: AtomicUsize,
    bytes: AtomicU64,
}

impl Repo {
    /// Opens the repository rooted at `root` (which must exist) with the default limits.
    pub fn open(root: &Path) -> Result<Self, RenderError> {
        Self::open_with(root, RenderLimits::default())
    }

    /// Opens the repository rooted at `root` (which must exist) for one render within `limits`.
    pub fn open_with(root: &Path, limits: RenderLimits) -> Result<Self, RenderError> {
        let root = root.canonicalize().map_err(|source| RenderError::Read {
            path: root.to_path_buf(),
            source,
        })?;
        Ok(Repo {
            root,
            limits,
            spent: Arc::default(),
        })
    }

    /// The limits this render runs within.
    pub fn limits(&self) -> &RenderLimits {
        &self.limits
    }

    /// Counts `count` objects loaded from `path`; an error once the render has loaded more
    /// than `--max-objects` (checked as they come, so a repo of millions of documents stops
    /// early instead of filling memory).
    pub fn count_objects(&self, count: usize, path: &Path) -> Result<(), RenderError> {
        let before = self.spent.objects.fetch_add(count, Ordering::Relaxed);
        let limit = self.limits.max_objects;
        if before.saturating_add(count) > limit {
            return Err(RenderError::Limit {
                path: path.to_path_buf(),
                what: format!("more than {limit} objects in this render"),
                flag: "--max-objects",
            });
        }
        Ok(())
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
        self.resolve_os(base, std::ffi::OsStr::new(reference), referenced_from)
    }

    /// [`Repo::resolve`] for a name read from a directory, which need not be UTF-8 (Linux file
    /// names are bytes): no URL check, as no kustomization wrote it.
    pub fn resolve_os(
        &self,
        base: &Path,
        reference: &std::ffi::OsStr,
        referenced_from: &Path,
    ) -> Result<PathBuf, RenderError> {
        let joined = if Path::new(reference).is_absolute() {
            PathBuf::from(reference)
        } else {
            self.root.join(base).join(reference)
        };
        let escape = || RenderError::PathEscape {
            path: referenced_from.to_path_buf(),
            reference: reference.to_string_lossy().into_owned(),
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

    /// Reads a root-relative file as UTF-8, refusing files over `--max-file-size`.
    pub fn read_to_string(&self, relative: &Path) -> Result<String, RenderError> {
        let bytes = self.read_bytes(relative)?;
        String::from_utf8(bytes).map_err(|_| RenderError::Read {
            path: relative.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"),
        })
    }

    /// Reads a root-relative regular file of at most `--max-file-size`, within the render's
    /// `--max-render-size` of all files together. A named pipe, a
    /// device or a directory is refused before it is opened (reading a FIFO would block
    /// forever), and the read stops past the limit even if the file grew meanwhile.
    pub fn read_bytes(&self, relative: &Path) -> Result<Vec<u8>, RenderError> {
        use std::io::Read as _;
        let read_error = |source| RenderError::Read {
            path: relative.to_path_buf(),
            source,
        };
        let absolute = self.absolute(relative);
        let metadata = std::fs::metadata(&absolute).map_err(read_error)?;
        if !metadata.is_file() {
            return Err(read_error(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file",
            )));
        }
        let limit = self.limits.max_file_size;
        let too_large = |size| RenderError::TooLarge {
            path: relative.to_path_buf(),
            size,
            limit,
        };
        if metadata.len() > limit {
            return Err(too_large(metadata.len()));
        }
        let mut bytes = Vec::new();
        std::fs::File::open(&absolute)
            .and_then(|file| file.take(limit + 1).read_to_end(&mut bytes))
            .map_err(read_error)?;
        if bytes.len() as u64 > limit {
            return Err(too_large(bytes.len() as u64));
        }
        let total = self.limits.max_render_size;
        let before = self
            .spent
            .bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        if before.saturating_add(bytes.len() as u64) > total {
            return Err(RenderError::Limit {
                path: relative.to_path_buf(),
                what: format!(
                    "more than {} read from the repository in this render",
                    show_size(total)
                ),
                flag: "--max-render-size",
            });
        }
        Ok(bytes)
    }

    /// Reads and parses every YAML document of a root-relative file.
    pub fn load_objects(&self, relative: &Path) -> Result<Vec<Object>, RenderError> {
        self.load_objects_with(relative, Dialect::Kubernetes)
    }

    /// Reads and parses a YAML file into objects, read and checked as `dialect` says.
    pub fn load_objects_with(
        &self,
        relative: &Path,
        dialect: Dialect,
    ) -> Result<Vec<Object>, RenderError> {
        let text = self.read_to_string(relative)?;
        // A file of 100,000 small documents (or a List of as many items) would be parsed
        // whole before its objects are counted (200 MiB for 8 MiB of text): when it may go
        // over --max-objects (every object spells `kind`), its objects are counted first from
        // the parser's events, which build nothing.
        let remaining = self
            .limits
            .max_objects
            .saturating_sub(self.spent.objects.load(Ordering::Relaxed));
        if text.matches("kind").count() > remaining
            && let Some(counted) = count_objects_in(&text)
        {
            self.count_objects(counted, relative)?;
            let objects = parse_objects_with(&text, relative, dialect)?;
            self.count_objects(objects.len().saturating_sub(counted), relative)?;
            return Ok(objects);
        }
        let objects = parse_objects_with(&text, relative, dialect)?;
        self.count_objects(objects.len(), relative)?;
        Ok(objects)
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

#[cfg(test)]
mod tests {
    use super::*;

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
        // Generator files are read the same way (they once skipped the limit).
        let error = repo.read_bytes(Path::new("big.yaml")).unwrap_err();
        assert!(matches!(error, RenderError::TooLarge { .. }), "{error}");
    }

    #[test]
    fn a_file_of_many_documents_is_counted_before_it_is_built() {
        let root = tempfile::tempdir().unwrap();
        let documents: String = (0..1000)
            .map(|i| format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c{i}}}\n---\n"))
            .collect();
        std::fs::write(root.path().join("many.yaml"), &documents).unwrap();
        let limits = |max_objects| RenderLimits {
            max_objects,
            ..RenderLimits::default()
        };
        let repo = Repo::open_with(root.path(), limits(999)).unwrap();
        let error = repo.load_objects(Path::new("many.yaml")).unwrap_err();
        assert!(
            matches!(&error, RenderError::Limit { flag: "--max-objects", path, .. } if path == Path::new("many.yaml")),
            "{error}"
        );
        // Exactly at the limit loads; the root-mapping count matches the documents.
        let repo = Repo::open_with(root.path(), limits(1000)).unwrap();
        assert_eq!(
            repo.load_objects(Path::new("many.yaml")).unwrap().len(),
            1000
        );
        assert_eq!(count_objects_in(&documents), Some(1000));
        // One document, one List and its two items; a scalar document is no object.
        assert_eq!(
            count_objects_in("a: [{b: 2}]\n---\nitems: [{kind: A}, {kind: B}]\n---\nx\n"),
            Some(4)
        );
        // A List of many items is counted before it is built too.
        let items: String = (0..1000)
            .map(|i| format!("- {{apiVersion: v1, kind: ConfigMap, metadata: {{name: c{i}}}}}\n"))
            .collect();
        std::fs::write(
            root.path().join("list.yaml"),
            format!("apiVersion: v1\nkind: List\nitems:\n{items}"),
        )
        .unwrap();
        let repo = Repo::open_with(root.path(), limits(999)).unwrap();
        let error = repo.load_objects(Path::new("list.yaml")).unwrap_err();
        assert!(error.to_string().contains("--max-objects"), "{error}");
        let repo = Repo::open_with(root.path(), limits(1001)).unwrap();
        assert_eq!(
            repo.load_objects(Path::new("list.yaml")).unwrap().len(),
            1000
        );
    }

    #[test]
    fn named_pipes_are_refused_without_blocking() {
        let root = tempfile::tempdir().unwrap();
        let fifo = root.path().join("pipe.yaml");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo runs");
        assert!(made.success(), "mkfifo {}", fifo.display());
        let repo = Repo::open(root.path()).unwrap();
        let error = repo.load_objects(Path::new("pipe.yaml")).unwrap_err();
        assert!(
            error.to_string().contains("pipe.yaml")
                && format!("{error:?}").contains("not a regular file"),
            "{error:?}"
        );
    }
}
