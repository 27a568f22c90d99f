//! The `flotilla` binary: exit codes and outputs as the README documents them.

use std::path::Path;
use std::process::{Command, Output};

#[path = "support/hostile.rs"]
mod hostile;
#[path = "support/tools.rs"]
mod tools;

fn flotilla(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(args)
        // The example fleet's status-page app is a Helm chart.
        .env("FLOTILLA_HELM", tools::helm())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run flotilla")
}

fn write(root: &Path, file: &str, text: &str) {
    std::fs::write(root.join(file), text).unwrap();
}

const FLEET: &str = "apiVersion: fleet.kurator.dev/v1alpha1\nkind: Fleet\nmetadata: {name: f}\nspec:\n  clusters: [{name: one}, {name: two}]\n";

#[test]
fn plan_of_the_example_succeeds_with_a_table_and_json() {
    let table = flotilla(&["plan", "examples/fleet-repo"]);
    assert_eq!(
        table.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&table.stderr)
    );
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(
        text.contains("cluster-hangzhou=6 cluster-shanghai=4"),
        "{text}"
    );
    let json = flotilla(&["plan", "examples/fleet-repo", "--output", "json"]);
    let plan: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(plan["clusters"].as_array().unwrap().len(), 5);
}

#[test]
fn bad_policy_exits_2_naming_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "fleet.yaml", FLEET);
    write(
        dir.path(),
        "policy.yaml",
        "apiVersion: policy.karmada.io/v1alpha1\nkind: PropagationPolicy\nmetadata: {name: p}\nspec:\n  resourceSelector: []\n",
    );
    let out = flotilla(&["plan", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("policy.yaml") && stderr.contains("resourceSelector"),
        "{stderr}"
    );
}

#[test]
fn unplaceable_resource_exits_1_and_still_renders_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "fleet.yaml", FLEET);
    write(
        dir.path(),
        "apps.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: wide}\n---\n\
apiVersion: policy.karmada.io/v1alpha1\nkind: ClusterPropagationPolicy\nmetadata: {name: ok}\nspec:\n  resourceSelectors: [{apiVersion: v1, kind: ConfigMap, name: ok}]\n---\n\
apiVersion: policy.karmada.io/v1alpha1\nkind: ClusterPropagationPolicy\nmetadata: {name: wide}\nspec:\n  resourceSelectors: [{apiVersion: v1, kind: ConfigMap, name: wide}]\n  placement: {spreadConstraints: [{spreadByField: cluster, minGroups: 3}]}\n",
    );
    let out = flotilla(&["render", dir.path().to_str().unwrap(), "--cluster", "two"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("name: ok") && !stdout.contains("name: wide"),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("minGroups is 3"));
}

#[test]
fn render_out_writes_stable_files_and_refuses_foreign_directories() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let out_str = out.to_str().unwrap();
    for _ in 0..2 {
        // The second run replaces the first render.
        let run = flotilla(&["render", "examples/fleet-repo", "--out", out_str]);
        assert_eq!(
            run.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
    }
    let nginx = out.join("cluster-hangzhou/web/deployment.apps-nginx.yaml");
    let text = std::fs::read_to_string(&nginx).unwrap();
    assert!(text.contains("replicas: 6"), "{text}");
    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    write(&foreign, "keep.txt", "mine");
    let refused = flotilla(&[
        "render",
        "examples/fleet-repo",
        "--out",
        foreign.to_str().unwrap(),
    ]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(foreign.join("keep.txt").exists());
}

#[test]
fn render_out_refuses_names_that_would_leave_the_output_directory() {
    // A bad cluster name stops the render before anything is written (exit 2); a bad object
    // name fails that object in the plan (exit 1) and the rest is rendered inside --out.
    for (fleet_cluster, object_name, named, code) in [
        ("../escaped", "web", "spec.clusters[0].name", 2),
        ("one", "..", "metadata.name \"..\"", 1),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        write(
            &repo,
            "fleet.yaml",
            &format!(
                "apiVersion: fleet.kurator.dev/v1alpha1\nkind: Fleet\nmetadata: {{name: f}}\nspec:\n  clusters: [{{name: {fleet_cluster:?}}}]\n"
            ),
        );
        write(
            &repo,
            "app.yaml",
            &format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {object_name:?}, namespace: web}}\n---\napiVersion: policy.karmada.io/v1alpha1\nkind: ClusterPropagationPolicy\nmetadata: {{name: all}}\nspec:\n  resourceSelectors: [{{apiVersion: v1, kind: ConfigMap}}]\n"
            ),
        );
        let out = dir.path().join("out");
        let run = flotilla(&[
            "render",
            repo.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(code), "{stderr}");
        assert!(stderr.contains(named), "{stderr}");
        if code == 2 {
            assert!(!out.exists(), "nothing written");
        }
        assert!(!dir.path().join("escaped").exists());
        assert!(!dir.path().join("web").exists() && !dir.path().join("configmap-..").exists());
    }
}

#[test]
fn plan_refuses_cluster_names_no_kubernetes_name_can_be() {
    // `render --out` refused these names but `plan` placed onto them (exit 0): a name that
    // cannot exist is bad input for every command, naming the file, the object and the field.
    for (name, problem) in [
        ("../escaped", "contains `/`"),
        ("..", "is `.` or `..`"),
        ("", "is empty"),
        ("a%2f", "contains `/`"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "fleet.yaml",
            &format!(
                "apiVersion: fleet.kurator.dev/v1alpha1\nkind: Fleet\nmetadata: {{name: f}}\nspec:\n  clusters: [{{name: one}}, {{name: {name:?}}}]\n"
            ),
        );
        let out = flotilla(&["plan", dir.path().to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name:?}: {stderr}");
        assert!(
            stderr.contains("fleet.yaml:1: document 1: Fleet f: spec.clusters[1].name")
                && stderr.contains(problem),
            "{name:?}: {stderr}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "attached.yaml",
        "apiVersion: cluster.kurator.dev/v1alpha1\nkind: AttachedCluster\nmetadata: {name: '..'}\nspec: {}\n",
    );
    let out = flotilla(&["plan", dir.path().to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("attached.yaml:1: document 1: AttachedCluster ..: metadata.name"),
        "{stderr}"
    );
}

#[test]
fn a_directory_with_two_kustomization_files_is_refused_as_kustomize_refuses_it() {
    // kustomize (and so Flux and Argo CD) stops at "Found multiple kustomization files";
    // Flotilla silently built the first one (exit 0), so the same commit deployed differently.
    for second in ["kustomization.yml", "Kustomization"] {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "fleet.yaml", FLEET);
        std::fs::create_dir(dir.path().join("app")).unwrap();
        write(
            dir.path(),
            "app/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\n",
        );
        write(
            dir.path(),
            "app/kustomization.yaml",
            "resources: [cm.yaml]\n",
        );
        write(
            dir.path(),
            &format!("app/{second}"),
            "namePrefix: other-\nresources: [cm.yaml]\n",
        );
        let out = flotilla(&["plan", dir.path().to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{second}: {stderr}");
        assert!(
            stderr.contains("app/kustomization.yaml")
                && stderr.contains(&format!("app/{second} is a kustomization file too")),
            "{second}: {stderr}"
        );
    }
}

#[test]
fn max_placed_objects_bounds_objects_times_clusters() {
    // 500 objects on 2,000 clusters (a million copies) took 2.5 GiB and 17 s, within every
    // render limit: placement multiplies. It stops at --max-placed-objects, exit 2, naming
    // the resource that went over and the flag; the flag raises it.
    let clusters: String = (0..300).map(|i| format!("{{name: c{i}}}, ")).collect();
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "fleet.yaml",
        &format!(
            "apiVersion: fleet.kurator.dev/v1alpha1\nkind: Fleet\nmetadata: {{name: f}}\nspec:\n  clusters: [{clusters}]\n"
        ),
    );
    let objects: String = (0..10)
        .map(|i| {
            format!(
                "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm{i}, namespace: web}}\n"
            )
        })
        .collect();
    write(
        dir.path(),
        "apps.yaml",
        &format!(
            "{objects}---\napiVersion: policy.karmada.io/v1alpha1\nkind: ClusterPropagationPolicy\nmetadata: {{name: all}}\nspec:\n  resourceSelectors: [{{apiVersion: v1, kind: ConfigMap}}]\n"
        ),
    );
    let path = dir.path().to_str().unwrap();
    let out = flotilla(&["plan", path, "--max-placed-objects", "2999"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("apps.yaml:38: document 10: ConfigMap web/cm9")
            && stderr.contains("more than 2999 objects placed")
            && stderr.contains("--max-placed-objects"),
        "{stderr}"
    );
    let out = flotilla(&["plan", path, "--max-placed-objects", "3000"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn status_of_an_unreachable_agent_exits_2_naming_the_url() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = format!("http://127.0.0.1:{port}");
    let out = flotilla(&["status", "--server", &server]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(&format!("{server}/status: cannot connect")),
        "{stderr}"
    );
    let out = flotilla(&["status", "--server", "https://127.0.0.1:8080"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("https is not supported"), "{stderr}");
}

/// An agent of a newer version sends a cluster health this `flotilla` has no rule for: the
/// exit code cannot be decided, so the command exits 2 naming the field (it does not guess).
#[test]
fn status_of_an_answer_with_an_unknown_value_exits_2_naming_the_field() {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let server = format!("http://{}", listener.local_addr().unwrap());
    let answer = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = Vec::new();
        let mut buffer = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buffer).unwrap();
            assert!(n > 0, "the request ended early");
            request.extend_from_slice(&buffer[..n]);
        }
        let body = r#"{"ready": true, "clusters": {"one": {"health": "Hibernating"}}}"#;
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(response.as_bytes()).unwrap();
    });
    let out = flotilla(&["status", "--server", &server]);
    answer.join().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(&format!(
            "{server}/status: the answer is not a flotilla /status: clusters.one.health: unknown variant `Hibernating`"
        )),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

/// A fleet of `count` ConfigMaps in one file, placed on both clusters.
fn generated_fleet(root: &Path, count: usize) {
    write(root, "fleet.yaml", FLEET);
    let mut text = String::new();
    for index in 0..count {
        text.push_str(&format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm-{index}}}\n---\n"
        ));
    }
    write(root, "apps.yaml", &text);
}

fn exit_0(out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

fn exit_2_naming(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
    }
}

#[test]
fn max_objects_stops_a_render_naming_the_limit_the_file_and_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    generated_fleet(dir.path(), 120);
    let path = dir.path().to_str().unwrap();
    let over = flotilla(&["plan", path, "--max-objects", "100"]);
    exit_2_naming(
        &over,
        &["apps.yaml", "more than 100 objects", "--max-objects"],
    );
    // The same repo within a higher limit plans (exit 0), also for render.
    let within = flotilla(&["plan", path, "--max-objects", "200"]);
    exit_0(&within);
    let render = flotilla(&["render", path, "--max-objects", "50"]);
    exit_2_naming(&render, &["--max-objects"]);
    // Zero is no limit anyone means: refused as usage.
    let zero = flotilla(&["plan", path, "--max-objects", "0"]);
    assert_eq!(zero.status.code(), Some(2));
}

#[test]
fn max_depth_refuses_deeper_directories_and_kustomizations() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "fleet.yaml", FLEET);
    let deep = dir.path().join("a/b/c/d");
    std::fs::create_dir_all(&deep).unwrap();
    write(
        &deep,
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: deep}\n",
    );
    let path = dir.path().to_str().unwrap();
    let over = flotilla(&["plan", path, "--max-depth", "3"]);
    exit_2_naming(
        &over,
        &["a/b/c/d", "more than 3 directories deep", "--max-depth"],
    );
    let within = flotilla(&["plan", path, "--max-depth", "4"]);
    assert_eq!(within.status.code(), Some(0));
    // Kustomizations nested through bases count the same way.
    let kustomized = tempfile::tempdir().unwrap();
    write(
        kustomized.path(),
        "kustomization.yaml",
        "resources: [fleet.yaml, base]\n",
    );
    write(kustomized.path(), "fleet.yaml", FLEET);
    std::fs::create_dir_all(kustomized.path().join("base/base")).unwrap();
    write(
        &kustomized.path().join("base"),
        "kustomization.yaml",
        "resources: [base]\n",
    );
    write(
        &kustomized.path().join("base/base"),
        "kustomization.yaml",
        "resources: []\n",
    );
    let path = kustomized.path().to_str().unwrap();
    let over = flotilla(&["plan", path, "--max-depth", "2"]);
    exit_2_naming(
        &over,
        &[
            "base/base/kustomization.yaml",
            "kustomizations nested",
            "--max-depth",
        ],
    );
    assert_eq!(
        flotilla(&["plan", path, "--max-depth", "3"]).status.code(),
        Some(0)
    );
    // More than the ceiling is a usage error, not a stack overflow later.
    assert_eq!(
        flotilla(&["plan", path, "--max-depth", "100000"])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn max_file_size_covers_manifests_and_generator_files() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "fleet.yaml", FLEET);
    write(
        dir.path(),
        "kustomization.yaml",
        "resources: [fleet.yaml]\nconfigMapGenerator:\n- name: blob\n  files: [blob.txt]\n",
    );
    write(dir.path(), "blob.txt", &"x".repeat(3000));
    let path = dir.path().to_str().unwrap();
    let over = flotilla(&["plan", path, "--max-file-size", "2KiB"]);
    exit_2_naming(
        &over,
        &["blob.txt", "3000 bytes", "2048", "--max-file-size"],
    );
    let within = flotilla(&["plan", path, "--max-file-size", "4KiB"]);
    exit_0(&within);
    // All files together are bounded too.
    let total = flotilla(&["plan", path, "--max-render-size", "3000B"]);
    exit_2_naming(&total, &["--max-render-size"]);
    for bad in ["0", "8TB", "lots"] {
        let out = flotilla(&["plan", path, "--max-file-size", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
    }
}

#[test]
fn a_file_name_that_is_not_utf8_does_not_break_the_render() {
    use std::os::unix::ffi::OsStrExt as _;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "fleet.yaml", FLEET);
    write(
        dir.path(),
        "policy.yaml",
        "apiVersion: policy.karmada.io/v1alpha1\nkind: ClusterPropagationPolicy\nmetadata: {name: all}\nspec:\n  resourceSelectors: [{apiVersion: v1, kind: ConfigMap}]\n",
    );
    // Latin-1 names, as an old tool may leave them: a note, and a manifest that is loaded.
    let note = std::ffi::OsStr::from_bytes(b"notes-caf\xe9.txt");
    std::fs::write(dir.path().join(note), "not yaml").unwrap();
    let manifest = std::ffi::OsStr::from_bytes(b"app-\xff.yaml");
    std::fs::write(
        dir.path().join(manifest),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: latin}\n",
    )
    .unwrap();
    let subdir = dir.path().join(std::ffi::OsStr::from_bytes(b"dir-\xfe"));
    std::fs::create_dir(&subdir).unwrap();
    write(
        &subdir,
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: inside}\n",
    );
    let out = flotilla(&["render", dir.path().to_str().unwrap(), "--cluster", "one"]);
    exit_0(&out);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("name: latin") && stdout.contains("name: inside"),
        "{stdout}"
    );
    // A broken manifest under such a name is reported with the name shown lossily.
    std::fs::write(dir.path().join(manifest), "kind: [").unwrap();
    let out = flotilla(&["plan", dir.path().to_str().unwrap()]);
    exit_2_naming(&out, &["app-\u{fffd}.yaml"]);
}

#[test]
fn limit_flags_are_documented_in_help() {
    for (command, flags) in [
        (
            "plan",
            &[
                "--max-objects",
                "--max-depth",
                "--max-file-size",
                "--max-render-size",
                "--max-placed-objects",
            ][..],
        ),
        (
            "render",
            &["--max-objects", "--max-depth", "--max-file-size"][..],
        ),
        (
            "sync",
            &["--max-objects", "--max-depth", "--max-file-size"][..],
        ),
        (
            "diff",
            &["--max-objects", "--max-depth", "--max-file-size"][..],
        ),
        (
            "run",
            &[
                "--max-objects",
                "--max-depth",
                "--max-file-size",
                "--max-body",
                "--max-concurrent-requests",
                "--header-timeout",
                "--body-timeout",
                "--idle-timeout",
                "--max-connections",
                "--dedupe-entries",
            ][..],
        ),
    ] {
        let help = flotilla(&[command, "--help"]);
        let text = String::from_utf8(help.stdout).unwrap();
        for flag in flags {
            assert!(text.contains(flag), "{command} --help lacks {flag}: {text}");
        }
        assert!(text.contains("[default: "), "{text}");
    }
}

#[test]
fn weights_and_secret_data_that_kubernetes_refuses_exit_2_naming_the_field() {
    let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 4\n  selector: {matchLabels: {app: web}}\n  template: {metadata: {labels: {app: web}}, spec: {containers: [{name: c, image: nginx}]}}\n";
    let policy = |weights: &str| {
        format!(
            "apiVersion: policy.karmada.io/v1alpha1\nkind: ClusterPropagationPolicy\nmetadata: {{name: web}}\nspec:\n  resourceSelectors: [{{apiVersion: apps/v1, kind: Deployment, name: web}}]\n  placement:\n    replicaScheduling:\n      replicaSchedulingType: Divided\n      replicaDivisionPreference: Weighted\n      weightPreference:\n        staticWeightList:\n{weights}"
        )
    };
    let weight = |cluster: &str, weight: i64| {
        format!("        - {{targetCluster: {{clusterNames: [{cluster}]}}, weight: {weight}}}\n")
    };
    for (weights, field) in [
        (
            weight("one", -1) + &weight("two", 3),
            "staticWeightList[0].weight",
        ),
        (
            weight("one", 0) + &weight("two", 0),
            "staticWeightList[0].weight",
        ),
        (
            weight("one", 1) + &weight("two", 0),
            "staticWeightList[1].weight",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "fleet.yaml", FLEET);
        write(dir.path(), "web.yaml", deployment);
        write(dir.path(), "policy.yaml", &policy(&weights));
        let out = flotilla(&["plan", dir.path().to_str().unwrap()]);
        exit_2_naming(&out, &["policy.yaml", field, "at least 1"]);
    }
    // Weights of at least 1 divide as Karmada does.
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "fleet.yaml", FLEET);
    write(dir.path(), "web.yaml", deployment);
    write(
        dir.path(),
        "policy.yaml",
        &policy(&(weight("one", 3) + &weight("two", 1))),
    );
    let out = flotilla(&["plan", dir.path().to_str().unwrap()]);
    exit_0(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("one=3 two=1"));

    // A Secret whose data is not base64: the apiserver would refuse it in every cluster.
    let secret =
        |data: &str| format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\ndata:\n{data}");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "fleet.yaml", FLEET);
    write(
        dir.path(),
        "secrets.yaml",
        &format!(
            "{}---\n{}",
            secret("  good: aGVsbG8=\n"),
            secret("  good: aGVsbG8=\n  password: not base64!\n").replace("name: s", "name: t")
        ),
    );
    let out = flotilla(&["plan", dir.path().to_str().unwrap()]);
    exit_2_naming(
        &out,
        &["secrets.yaml", "document 2", "data.password", "base64"],
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("not base64!"));
    // Unpadded, or a number, is refused too; wrapped lines and stringData are fine.
    for (data, code) in [
        ("  k: aGVsbG8\n", 2),
        ("  k: 12\n", 2),
        ("  k: |\n    aGVs\n    bG8=\n", 0),
        ("  k: ''\n", 0),
    ] {
        write(dir.path(), "secrets.yaml", &secret(data));
        let out = flotilla(&["plan", dir.path().to_str().unwrap()]);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{data}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn replicas_stay_within_int32_as_kubernetes_counts_them() {
    let policy = "apiVersion: policy.karmada.io/v1alpha1\nkind: ClusterPropagationPolicy\nmetadata: {name: web}\nspec:\n  resourceSelectors: [{apiVersion: apps/v1, kind: Deployment}]\n  placement:\n    replicaScheduling: {replicaSchedulingType: Divided, replicaDivisionPreference: Weighted}\n";
    let deployment = |replicas: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: web}}}}\n  template: {{metadata: {{labels: {{app: web}}}}, spec: {{containers: [{{name: c, image: nginx}}]}}}}\n"
        )
    };
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "fleet.yaml", FLEET);
    write(dir.path(), "policy.yaml", policy);
    // int32's largest is divided (by clusters, not replica by replica).
    write(dir.path(), "web.yaml", &deployment("2147483647"));
    let out = flotilla(&["plan", dir.path().to_str().unwrap()]);
    exit_0(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("one=1073741824 two=1073741823"), "{stdout}");
    // One more, or a negative count, fails that resource (exit 1) naming spec.replicas.
    for replicas in ["2147483648", "-5"] {
        write(dir.path(), "web.yaml", &deployment(replicas));
        let out = flotilla(&["plan", dir.path().to_str().unwrap()]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(1), "{replicas}: {text}");
        assert!(
            text.contains("spec.replicas") && text.contains("0 to 2147483647"),
            "{replicas}: {text}"
        );
    }
}

#[test]
fn a_divided_workload_whose_spec_is_not_a_mapping_fails_that_resource_not_the_process() {
    let policy = "apiVersion: policy.karmada.io/v1alpha1\nkind: ClusterPropagationPolicy\nmetadata: {name: web}\nspec:\n  resourceSelectors: [{apiVersion: apps/v1, kind: Deployment}]\n  placement:\n    replicaScheduling: {replicaSchedulingType: Divided, replicaDivisionPreference: Weighted}\n";
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "fleet.yaml", FLEET);
    write(dir.path(), "policy.yaml", policy);
    // Divided replicas are written into `spec` of each copy: a scalar or a list there used
    // to panic (exit 101). Now that resource fails, naming `spec`.
    for spec in ["x", "[1, 2]", "5"] {
        write(
            dir.path(),
            "web.yaml",
            &format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec: {spec}\n"
            ),
        );
        for command in ["plan", "render"] {
            let out = flotilla(&[command, dir.path().to_str().unwrap()]);
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(out.status.code(), Some(1), "{command} spec {spec}: {text}");
            assert!(
                text.contains("web.yaml")
                    && text.contains("spec:")
                    && text.contains("not a mapping"),
                "{command} spec {spec}: {text}"
            );
        }
    }
}

#[test]
fn a_field_overriders_yaml_is_read_with_the_fleets_alias_bounds() {
    // A ConfigMap whose data holds a billion-node alias bomb, edited by a yaml fieldOverrider
    // in every cluster: it used to be expanded up to serde-saphyr's node budget (seconds per
    // cluster, a multi-line message). It is refused at the loader's alias replay limit.
    let bomb = hostile::alias_bomb();
    let indented: String = bomb.lines().map(|l| format!("    {l}\n")).collect();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "fleet.yaml", FLEET);
    write(
        dir.path(),
        "cm.yaml",
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm, namespace: web}}\ndata:\n  y: |\n{indented}---\napiVersion: policy.karmada.io/v1alpha1\nkind: ClusterPropagationPolicy\nmetadata: {{name: cms}}\nspec: {{resourceSelectors: [{{apiVersion: v1, kind: ConfigMap}}]}}\n---\napiVersion: policy.karmada.io/v1alpha1\nkind: ClusterOverridePolicy\nmetadata: {{name: op}}\nspec:\n  resourceSelectors: [{{apiVersion: v1, kind: ConfigMap}}]\n  overrideRules:\n  - overriders:\n      fieldOverrider: [{{fieldPath: /data/y, yaml: [{{subPath: /z, operator: add, value: 1}}]}}]\n"
        ),
    );
    let out = flotilla(&["plan", dir.path().to_str().unwrap()]);
    let stderr = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 2, "one error per cluster: {stderr}");
    for error in errors {
        assert!(
            error.contains("cm.yaml")
                && error.contains("/data/y: not YAML")
                && error.contains("alias replay limit"),
            "{stderr}"
        );
    }
    // One line per error: no parser snippet of the bomb.
    assert!(!stderr.contains("*a,*a"), "{stderr}");
}

#[test]
fn render_out_writes_objects_whose_names_are_as_long_as_kubernetes_allows() {
    // 253 bytes is a valid name, but `configmap-<name>.yaml` is longer than a file name may
    // be: the write used to fail halfway (exit 2, "File name too long", part of the tree
    // written). Two such names that differ only at their end must stay two files.
    let long = |last: char| format!("{}{last}", "a".repeat(252));
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    write(&repo, "fleet.yaml", FLEET);
    write(
        &repo,
        "app.yaml",
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {}, namespace: web}}\ndata: {{n: one}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {}, namespace: web}}\ndata: {{n: two}}\n---\napiVersion: policy.karmada.io/v1alpha1\nkind: ClusterPropagationPolicy\nmetadata: {{name: all}}\nspec:\n  resourceSelectors: [{{apiVersion: v1, kind: ConfigMap}}]\n",
            long('b'),
            long('c')
        ),
    );
    let out = dir.path().join("out");
    let run = flotilla(&[
        "render",
        repo.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    for cluster in ["one", "two"] {
        let mut data: Vec<String> = std::fs::read_dir(out.join(cluster).join("web"))
            .unwrap()
            .map(|entry| {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_str().unwrap().to_string();
                assert!(
                    name.len() <= 255 && name.starts_with("configmap-aaa"),
                    "{name}"
                );
                std::fs::read_to_string(&path).unwrap()
            })
            .collect();
        data.sort();
        assert_eq!(data.len(), 2, "{data:?}");
        assert!(
            data[0].contains(&long('b')) && data[0].contains("one"),
            "{data:?}"
        );
        assert!(
            data[1].contains(&long('c')) && data[1].contains("two"),
            "{data:?}"
        );
    }
}

#[test]
fn max_file_size_covers_a_charts_own_values_file() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "fleet.yaml", FLEET);
    write(
        dir.path(),
        "kustomization.yaml",
        "resources: [fleet.yaml]\nhelmCharts:\n- {name: demo, releaseName: demo}\n",
    );
    let chart = dir.path().join("charts/demo");
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    write(
        &chart,
        "Chart.yaml",
        "apiVersion: v2\nname: demo\nversion: 0.1.0\n",
    );
    write(
        &chart,
        "values.yaml",
        &format!("note: {}\n", "x".repeat(3000)),
    );
    write(
        &chart.join("templates"),
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: demo}\n",
    );
    let path = dir.path().to_str().unwrap();
    let over = flotilla(&["plan", path, "--max-file-size", "2KiB"]);
    exit_2_naming(&over, &["charts/demo/values.yaml", "--max-file-size"]);
    exit_0(&flotilla(&["plan", path, "--max-file-size", "4KiB"]));
}
