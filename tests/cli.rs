//! The `flotilla` binary: exit codes and outputs as the README documents them.

use std::path::Path;
use std::process::{Command, Output};

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
        ("../escaped", "web", "cluster name", 2),
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
            assert!(stderr.contains("nothing was written"), "{stderr}");
            assert!(!out.exists(), "nothing written");
        }
        assert!(!dir.path().join("escaped").exists());
        assert!(!dir.path().join("web").exists() && !dir.path().join("configmap-..").exists());
    }
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
