//! What the two-document targets share: an input read as a YAML stream.

use std::path::Path;

use flotilla::render::load::{Dialect, parse_documents_with};
use serde_json::Value;

/// The documents of `data` as `dialect` reads them, when it has at least two (the object and
/// what is applied to it); `None` for text that is not UTF-8 or not YAML, which the loader
/// target covers.
pub fn two_or_more(data: &[u8], dialect: Dialect) -> Option<(Value, Value, Vec<Value>)> {
    let text = std::str::from_utf8(data).ok()?;
    let documents = parse_documents_with(text, Path::new("fuzz.yaml"), dialect).ok()?;
    let mut documents = documents.into_iter().map(|(value, _)| value);
    let (first, second) = (documents.next()?, documents.next()?);
    Some((first, second, documents.collect()))
}
