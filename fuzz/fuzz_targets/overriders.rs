//! Karmada's overriders: the input is a YAML stream whose first document is the resource
//! template and whose second is an `overriders` block (plaintext, imageOverrider,
//! commandOverrider, argsOverrider, labelsOverrider, annotationsOverrider, fieldOverrider).
//! Each further document's `image` string is also parsed as an image reference.
#![no_main]

mod documents;

use flotilla::placement::types::Overriders;
use flotilla::placement::{ImageRef, apply_overriders};
use flotilla::render::load::Dialect;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((mut object, overriders, rest)) = documents::two_or_more(data, Dialect::Kubernetes)
    else {
        return;
    };
    for extra in rest {
        if let Some(image) = extra.get("image").and_then(|v| v.as_str()) {
            let _ = ImageRef::parse(image);
        }
    }
    let Ok(overriders) = serde_json::from_value::<Overriders>(overriders) else {
        return;
    };
    let _ = apply_overriders(&mut object, &overriders);
});
