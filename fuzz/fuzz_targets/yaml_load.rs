//! The YAML loader: one file's text read as Kubernetes reads manifests, and as kustomize reads
//! resources and patches. Any text must give objects or an error, never a panic or a hang.
#![no_main]

use std::path::Path;

use flotilla::render::load::{Dialect, parse_documents_with, parse_objects_with};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Files are read as UTF-8 (a file that is not fails before parsing).
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.yaml");
    let _ = parse_objects_with(text, path, Dialect::Kubernetes);
    let _ = parse_objects_with(text, path, Dialect::Kustomize);
    let _ = parse_documents_with(text, path, Dialect::Kustomize);
});
