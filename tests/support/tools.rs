//! The tools the tests build once and cache (`tests/build-*.sh`), shared by the test binaries
//! through `#[path = "support/tools.rs"] mod tools;`.
// Each test binary uses a part.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

/// helm v3 (`tests/build-helm.sh`), which the example fleet's chart and the Helm fixtures need.
pub fn helm() -> &'static str {
    static HELM: OnceLock<String> = OnceLock::new();
    HELM.get_or_init(|| built_by("tests/build-helm.sh"))
}

/// Points Flotilla's renders in this process at [`helm`] through `FLOTILLA_HELM`: once, to one
/// value, before the first render of a test that calls it.
pub fn use_helm() {
    static SET: OnceLock<()> = OnceLock::new();
    SET.get_or_init(|| {
        let helm = helm();
        // SAFETY: set once, to one value, under the OnceLock, before this process renders;
        // nothing in the test binaries reads the environment through libc concurrently.
        unsafe { std::env::set_var("FLOTILLA_HELM", helm) };
    });
}

/// Runs a build script of tests/ that prints the path of the binary it built (or cached).
/// A test that needs the tool fails here, saying why, when it cannot be built.
pub fn built_by(script: &str) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(script);
    let output = Command::new(&script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap_or_else(|error| panic!("running {}: {error}", script.display()));
    assert!(
        output.status.success(),
        "{} failed: the test needs what it builds",
        script.display()
    );
    String::from_utf8(output.stdout)
        .expect("a path")
        .trim()
        .to_string()
}
