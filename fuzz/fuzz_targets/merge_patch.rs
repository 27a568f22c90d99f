//! Strategic merge and JSON 6902 patches: the input is a YAML stream whose first document is
//! the object and whose second is the patch (a mapping: strategic merge, built-in and schemaless;
//! a list: RFC 6902 operations).
#![no_main]

mod documents;

use flotilla::fuzzing::{json_patch, schemaless_merge, strategic_merge};
use flotilla::render::load::Dialect;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Read as kustomize reads patches, so the values are those a real patch can hold.
    let Some((target, patch, _)) = documents::two_or_more(data, Dialect::Kustomize) else {
        return;
    };
    if patch.is_array() {
        let mut object = target;
        let _ = json_patch(&mut object, patch);
    } else {
        let mut object = target.clone();
        let _ = strategic_merge(&mut object, &patch);
        let mut object = target;
        schemaless_merge(&mut object, &patch);
    }
});
