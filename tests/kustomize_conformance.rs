//! Flotilla's kustomize subset against kustomize v5.5 (what `kubectl kustomize` 1.32 runs).
//!
//! Each case in `tests/fixtures/kustomize/<case>/` is built by Flotilla and compared, as parsed
//! objects keyed by identity, with the `expected.yaml` that kustomize wrote beside it
//! (`regenerate.sh`). The test also builds each case live with the real kustomize v5.5.0
//! (built once from the Go module proxy by `tests/build-kustomize.sh`), so a fixture can never
//! drift from what kustomize really does.
//!
//! The `helmCharts` cases need helm v3 (`tests/build-helm.sh`): kustomize runs with
//! `--enable-helm --helm-command <it>` and Flotilla finds it through `FLOTILLA_HELM`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use flotilla::object::{Object, ObjectRef};
use flotilla::render::load::{Dialect, parse_objects_with};
use flotilla::render::render_tree;
use serde_json::Value;

#[path = "support/tools.rs"]
mod tools;

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kustomize");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixtures directory")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("kustomization.yaml").is_file())
        .collect();
    cases.sort();
    cases
}

fn by_identity(objects: &[Object]) -> BTreeMap<ObjectRef, &Value> {
    objects.iter().map(|o| (o.object_ref(), &o.value)).collect()
}

/// Describes every difference between two builds, or returns an empty string.
fn differences(case: &Path, ours: &[Object], theirs: &[Object]) -> String {
    let (ours, theirs) = (by_identity(ours), by_identity(theirs));
    let mut out = String::new();
    for (id, expected) in &theirs {
        match ours.get(id) {
            None => out.push_str(&format!("{}: missing {id}\n", case.display())),
            Some(actual) if actual != expected => out.push_str(&format!(
                "{}: {id} differs\n  flotilla: {}\n  kustomize: {}\n",
                case.display(),
                serde_json::to_string(actual).unwrap(),
                serde_json::to_string(expected).unwrap()
            )),
            Some(_) => {}
        }
    }
    for id in ours.keys().filter(|id| !theirs.contains_key(*id)) {
        out.push_str(&format!("{}: unexpected {id}\n", case.display()));
    }
    out
}

fn render(case: &Path) -> Vec<Object> {
    tools::use_helm();
    render_tree(case, Path::new("."))
        .unwrap_or_else(|e| panic!("{}: {e}", case.display()))
        .objects
}

#[test]
fn overlays_render_like_kubectl_kustomize() {
    let cases = cases();
    assert!(
        cases.len() >= 15,
        "expected at least 15 cases, found {}",
        cases.len()
    );
    let mut failures = String::new();
    for case in &cases {
        let expected_text = std::fs::read_to_string(case.join("expected.yaml")).unwrap();
        let expected = parse_objects_with(
            &expected_text,
            Path::new("expected.yaml"),
            Dialect::Kustomize,
        )
        .unwrap();
        assert!(
            !expected.is_empty(),
            "{}: empty expected.yaml",
            case.display()
        );
        failures.push_str(&differences(case, &render(case), &expected));
    }
    assert!(failures.is_empty(), "{failures}");
}

/// The reference kustomize binary, built once from the Go module proxy by
/// `tests/build-kustomize.sh` (cached in ~/.cache/flotilla).
fn reference_kustomize() -> String {
    tools::built_by("tests/build-kustomize.sh")
}

/// What the reference kustomize builds from `dir` (with helm enabled).
fn live_build(kustomize: &str, dir: &Path) -> Vec<Object> {
    let output = Command::new(kustomize)
        .args(["build", "--enable-helm", "--helm-command", tools::helm()])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}: kustomize build failed: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    parse_objects_with(
        &String::from_utf8(output.stdout).unwrap(),
        Path::new("live"),
        Dialect::Kustomize,
    )
    .unwrap()
}

#[test]
fn fixtures_match_live_kustomize() {
    let kustomize = reference_kustomize();
    let mut failures = String::new();
    for case in cases() {
        let live = live_build(&kustomize, &case);
        failures.push_str(&differences(&case, &render(&case), &live));
    }
    assert!(failures.is_empty(), "{failures}");
}

/// The example fleet's chart app renders as kustomize inflates it.
#[test]
fn helm_example_app_matches_live_kustomize() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/fleet-repo");
    let app = Path::new("apps/status-page");
    tools::use_helm();
    let ours = render_tree(&root, app)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .objects;
    let live = live_build(&reference_kustomize(), &root.join(app));
    assert_eq!(ours.len(), 4, "ConfigMap, Deployment and two policies");
    let failures = differences(&root.join(app), &ours, &live);
    assert!(failures.is_empty(), "{failures}");
}
