//! Inflating charts with a stand-in helm: arguments, values, limits and paths.

use super::*;
use crate::render::tests::write;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

/// A repository with `app/kustomization.yaml` and a minimal chart `app/charts/web`.
fn repo_with_chart() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "app/kustomization.yaml",
        "helmCharts: [{name: web}]\n",
    );
    write(
        dir.path(),
        "app/charts/web/Chart.yaml",
        "apiVersion: v2\nname: web\nversion: 1.0.0\n",
    );
    write(dir.path(), "app/charts/web/values.yaml", "replicas: 1\n");
    dir
}

/// A stand-in helm: a shell script answering `version` as helm v3 and running `body` for
/// anything else.
fn fake_helm(dir: &Path, body: &str) -> HelmRunner {
    let program = dir.join("helm");
    std::fs::write(
        &program,
        format!("#!/bin/sh\nif [ \"$1\" = version ]; then echo v3.22.0; exit 0; fi\n{body}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    HelmRunner {
        program,
        timeout: Duration::from_secs(20),
        max_output: 4096,
    }
}

fn inflate_with(
    root: &Path,
    chart: &str,
    globals: Option<&str>,
    runner: &HelmRunner,
) -> Result<Vec<Object>, RenderError> {
    let repo = Repo::open(root).unwrap();
    let chart: HelmChart = serde_saphyr::from_str(chart).unwrap();
    let globals: Option<HelmGlobals> = globals.map(|g| serde_saphyr::from_str(g).unwrap());
    ChartSet {
        repo: &repo,
        dir: Path::new("app"),
        file: Path::new("app/kustomization.yaml"),
    }
    .inflate(&chart, globals.as_ref(), 2, runner)
}

fn error_text(result: Result<Vec<Object>, RenderError>) -> String {
    result.unwrap_err().to_string()
}

#[test]
fn a_missing_chart_without_repo_names_the_field_and_says_to_vendor_it() {
    let repo = repo_with_chart();
    let runner = fake_helm(repo.path(), "exit 1");
    let error = error_text(inflate_with(repo.path(), "name: api", None, &runner));
    assert!(
        error.starts_with("app/kustomization.yaml: helmCharts[2]:"),
        "{error}"
    );
    assert!(
        error.contains("app/charts/api") && error.contains("vendor"),
        "{error}"
    );
}

#[test]
fn a_failed_pull_says_to_vendor_the_chart_into_the_chart_home() {
    let repo = repo_with_chart();
    let runner = fake_helm(repo.path(), "echo 'dial tcp: no route to host' >&2; exit 1");
    let error = error_text(inflate_with(
        repo.path(),
        "{name: api, repo: 'https://charts.example.com', version: 2.0.0}",
        Some("chartHome: vendor"),
        &runner,
    ));
    assert!(error.contains("helmCharts[2]"), "{error}");
    assert!(
        error.contains("vendor the chart into app/vendor/api-2.0.0/api"),
        "{error}"
    );
    assert!(error.contains("no route to host"), "{error}");
}

#[test]
fn a_missing_helm_binary_is_named_with_the_field() {
    let repo = repo_with_chart();
    let runner = HelmRunner {
        program: repo.path().join("no-such-helm"),
        ..HelmRunner::from_env()
    };
    let error = error_text(inflate_with(repo.path(), "name: web", None, &runner));
    assert!(
        error.starts_with("app/kustomization.yaml: helmCharts[2]:"),
        "{error}"
    );
    assert!(
        error.contains("no-such-helm") && error.contains(HELM_ENV),
        "{error}"
    );
}

#[test]
fn helm_v2_is_refused() {
    let repo = repo_with_chart();
    let mut runner = fake_helm(repo.path(), "exit 0");
    std::fs::write(
        &runner.program,
        "#!/bin/sh\necho 'Client: v2.17.0+ga690bad'\n",
    )
    .unwrap();
    runner.timeout = Duration::from_secs(20);
    let error = error_text(inflate_with(repo.path(), "name: web", None, &runner));
    assert!(error.contains("need helm v3"), "{error}");
}

#[test]
fn a_hanging_helm_is_killed_at_the_timeout() {
    let repo = repo_with_chart();
    let mut runner = fake_helm(repo.path(), "sleep 60");
    runner.timeout = Duration::from_millis(500);
    let started = Instant::now();
    let error = error_text(inflate_with(repo.path(), "name: web", None, &runner));
    assert!(error.contains("was killed"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn output_over_the_cap_is_refused() {
    let repo = repo_with_chart();
    let runner = fake_helm(repo.path(), "yes 'a: b'");
    let error = error_text(inflate_with(repo.path(), "name: web", None, &runner));
    assert!(error.contains("more than 4096 bytes"), "{error}");
}

#[test]
fn kustomize_arguments_and_values_stay_outside_the_repository() {
    let repo = repo_with_chart();
    write(repo.path(), "app/extra.yaml", "region: eu\n");
    // The fake helm prints its arguments and the values file it got as a ConfigMap.
    let runner = fake_helm(
        repo.path(),
        r#"printf 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: args}\ndata:\n  args: "%s"\n' "$*"
shift 3; while [ "$1" != -f ]; do shift; done
printf "  values: '%s'\n" "$(cat "$2")""#,
    );
    let before: Vec<_> = walk(repo.path());
    let objects = inflate_with(
        repo.path(),
        "{name: web, namespace: shop, includeCRDs: true, skipTests: true, \
         additionalValuesFiles: [extra.yaml], valuesInline: {replicas: 2.0, extra: {a: 1}}}",
        None,
        &runner,
    )
    .unwrap();
    let args = objects[0].value["data"]["args"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(args.starts_with("template --generate-name "), "{args}");
    assert!(
        args.contains("/app/charts/web --namespace shop -f "),
        "{args}"
    );
    assert!(args.contains("web-kustomize-values.yaml -f "), "{args}");
    assert!(
        args.ends_with("/app/extra.yaml --include-crds --skip-tests"),
        "{args}"
    );
    let values = objects[0].value["data"]["values"].as_str().unwrap();
    assert_eq!(values, r#"{"extra":{"a":1},"replicas":2}"#);
    assert_eq!(
        objects[0].origin,
        Origin::generated("app/kustomization.yaml")
    );
    assert_eq!(
        walk(repo.path()),
        before,
        "nothing may be written into the repository"
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out.sort();
    out
}

#[test]
fn paths_leaving_the_repository_are_refused() {
    let repo = repo_with_chart();
    let runner = fake_helm(repo.path(), "exit 1");
    let outside = tempfile::tempdir().unwrap();
    write(outside.path(), "web/Chart.yaml", "name: web\n");
    for (chart, globals) in [
        ("{name: web, valuesFile: ../../../etc/passwd}", None),
        ("{name: web, additionalValuesFiles: [/etc/passwd]}", None),
        ("name: web", Some("chartHome: ../..")),
    ] {
        let error = inflate_with(repo.path(), chart, globals, &runner).unwrap_err();
        assert!(
            matches!(error, RenderError::PathEscape { .. }),
            "{chart}: {error}"
        );
    }
    std::os::unix::fs::symlink(
        outside.path().join("web/Chart.yaml"),
        repo.path().join("app/charts/web/templates.yaml"),
    )
    .unwrap();
    let error = inflate_with(repo.path(), "name: web", None, &runner).unwrap_err();
    assert!(matches!(error, RenderError::PathEscape { .. }), "{error}");
}

#[test]
fn bad_values_settings_name_their_field() {
    let repo = repo_with_chart();
    let runner = fake_helm(repo.path(), "exit 1");
    let cases = [
        (
            "{name: web, valuesMerge: deep}",
            None,
            "helmCharts[2].valuesMerge:",
        ),
        (
            "{name: web, valuesInline: {replicas: [1]}}",
            None,
            "helmCharts[2].valuesInline: cannot merge a list into a scalar at .replicas",
        ),
        (
            "name: web",
            Some("configHome: /tmp/helm"),
            "helmGlobals.configHome:",
        ),
        (
            "{name: web, valuesFile: none.yaml}",
            None,
            "helmCharts[2].valuesFile: app/none.yaml: No such file",
        ),
        (
            "{name: web, additionalValuesFiles: [charts]}",
            None,
            "helmCharts[2].additionalValuesFiles[0]: app/charts is not a file",
        ),
    ];
    for (chart, globals, expected) in cases {
        let error = error_text(inflate_with(repo.path(), chart, globals, &runner));
        assert!(error.contains(expected), "{chart}: {error}");
    }
    // kyaml cannot merge valuesInline into a values file of comments only.
    write(repo.path(), "app/charts/web/values.yaml", "# nothing yet\n");
    let chart = "{name: web, valuesInline: {replicas: 2}}";
    let error = error_text(inflate_with(repo.path(), chart, None, &runner));
    assert!(error.contains("no YAML document"), "{error}");
}
