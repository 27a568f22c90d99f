//! The kustomize build: the input is a small tree of files written to a temporary directory
//! and rendered as `flotilla render` renders a fleet path. Each line `#== <path>` starts a
//! file; text before the first such line is `kustomization.yaml`. Paths are kept to plain
//! relative names (at most four parts of `[A-Za-z0-9._-]`, at most 32 files) so nothing is
//! written outside the directory. Helm is pointed at a program that does not exist: the
//! target never runs a process.
#![no_main]

use std::path::{Path, PathBuf};

use flotilla::render::render_tree;
use libfuzzer_sys::fuzz_target;

const MAX_FILES: usize = 32;

/// `name` as a path below the build directory, if it is a plain relative one.
fn safe_path(name: &str) -> Option<PathBuf> {
    let parts: Vec<&str> = name.trim().split('/').collect();
    let plain = |part: &&str| {
        !part.is_empty()
            && *part != "."
            && *part != ".."
            && part.len() <= 64
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    (parts.len() <= 4 && parts.iter().all(plain)).then(|| parts.iter().collect())
}

/// The files of an input: (relative path, text).
fn files(text: &str) -> Vec<(PathBuf, String)> {
    let mut files: Vec<(PathBuf, String)> = vec![("kustomization.yaml".into(), String::new())];
    let mut skipping = false;
    for line in text.split_inclusive('\n') {
        if let Some(name) = line.strip_prefix("#== ") {
            if files.len() >= MAX_FILES {
                break;
            }
            match safe_path(name) {
                Some(path) => {
                    files.push((path, String::new()));
                    skipping = false;
                }
                None => skipping = true,
            }
        } else if !skipping && let Some((_, body)) = files.last_mut() {
            body.push_str(line);
        }
    }
    files
}

fuzz_target!(
    init: {
        // SAFETY: set once, before the fuzzer starts any thread.
        unsafe { std::env::set_var("FLOTILLA_HELM", "/nonexistent/flotilla-fuzz-has-no-helm") };
    },
    |data: &[u8]| {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let Ok(dir) = tempfile::tempdir() else {
            return;
        };
        for (path, body) in files(text) {
            let absolute = dir.path().join(&path);
            if let Some(parent) = absolute.parent()
                && std::fs::create_dir_all(parent).is_err()
            {
                return;
            }
            // A name that is also a directory (`a` and `a/b`) is simply not written.
            let _ = std::fs::write(&absolute, body);
        }
        let _ = render_tree(dir.path(), Path::new("."));
    }
);
