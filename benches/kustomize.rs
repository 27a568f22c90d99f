//! `just bench`: Flotilla's kustomize build against the real kustomize v5.5.0 on the same
//! overlays (issue 12: at least 2x faster).
//!
//! Writes a generated overlay tree to a temporary directory: a base of `APPS` apps (a
//! Deployment, a Service, a ConfigMap generator and an HPA each), a component (labels, a patch
//! by label selector, a generator merge) and two overlays (staging, production) with
//! namePrefix, namespace, commonLabels, images, replicas, patches and a replacement. Then, for
//! each overlay at two sizes (500 and 1,500 objects) and for the three largest conformance fixtures, it times Flotilla
//! (`render_tree` in this process, what the agent runs on a commit) and `kustomize build` (a
//! process, as `kubectl kustomize` and Flux's kustomize-controller run it), and prints the
//! medians and the ratio. kustomize comes from `tests/build-kustomize.sh`; the bench fails if
//! it cannot run, and also fails if the two builds differ in their objects.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use flotilla::render::load::{Dialect, parse_objects_with};
use flotilla::render::render_tree;

const RUNS: usize = 5;

fn main() {
    let dir = tempfile::tempdir().expect("temporary directory");
    // FLOTILLA_BENCH_PROFILE=<apps>: only Flotilla's build of one generated overlay, in a
    // loop, for a profiler (`perf record`); no kustomize, no comparison.
    if let Some(apps) = std::env::var("FLOTILLA_BENCH_PROFILE")
        .ok()
        .and_then(|a| a.parse().ok())
    {
        write_tree(dir.path(), apps);
        for _ in 0..RUNS {
            let start = Instant::now();
            let rendered = render_tree(dir.path(), Path::new("overlays/staging")).expect("render");
            println!(
                "{} objects in {:.1} ms",
                rendered.objects.len(),
                ms(start.elapsed())
            );
        }
        return;
    }
    let kustomize = reference_kustomize();
    // (name, repository root, overlay below it)
    let mut cases: Vec<(String, PathBuf, PathBuf)> = Vec::new();
    for apps in [100, 300] {
        let root = dir.path().join(format!("apps{apps}"));
        write_tree(&root, apps);
        for overlay in ["staging", "production"] {
            cases.push((
                format!("{overlay} ({apps} apps)"),
                root.clone(),
                Path::new("overlays").join(overlay),
            ));
        }
    }
    cases.extend(largest_fixtures(3));

    println!(
        "kustomize build: Flotilla (in process) vs kustomize v5.5.0 (a process), median of {RUNS}"
    );
    let mut worst = f64::INFINITY;
    for (name, root, relative) in &cases {
        let path = root.join(relative);
        let path = path.as_path();
        let mut ours = Vec::new();
        let mut objects = 0;
        for _ in 0..RUNS {
            let start = Instant::now();
            let rendered = render_tree(root, relative).expect("flotilla render");
            ours.push(start.elapsed());
            objects = rendered.objects.len();
            check_same(name, &rendered.objects, &kustomize_build(&kustomize, path));
        }
        let mut theirs = Vec::new();
        for _ in 0..RUNS {
            let start = Instant::now();
            let status = Command::new(&kustomize)
                .args(["build", "--enable-helm"])
                .arg(path)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .expect("run kustomize");
            theirs.push(start.elapsed());
            assert!(status.success(), "{name}: kustomize build failed");
        }
        let (ours, theirs) = (median(ours), median(theirs));
        let ratio = theirs.as_secs_f64() / ours.as_secs_f64().max(1e-9);
        worst = worst.min(ratio);
        println!(
            "  {name:<45} {objects:>5} objects: flotilla {:>8.1} ms, kustomize {:>8.1} ms, {ratio:>5.1}x",
            ms(ours),
            ms(theirs),
        );
    }
    println!("slowest ratio: {worst:.1}x (target >= 2x)");
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn reference_kustomize() -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/build-kustomize.sh");
    let output = Command::new(&script)
        .output()
        .expect("run tests/build-kustomize.sh");
    assert!(
        output.status.success(),
        "tests/build-kustomize.sh failed (the benchmark needs the reference kustomize): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn kustomize_build(kustomize: &str, path: &Path) -> Vec<flotilla::object::Object> {
    let output = Command::new(kustomize)
        .args(["build", "--enable-helm"])
        .arg(path)
        .output()
        .expect("run kustomize");
    assert!(
        output.status.success(),
        "{}: kustomize build failed: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    parse_objects_with(&text, Path::new("kustomize"), Dialect::Kustomize)
        .expect("kustomize output parses")
}

/// A speed figure for a build that differs would mean nothing.
fn check_same(name: &str, ours: &[flotilla::object::Object], theirs: &[flotilla::object::Object]) {
    let key = |o: &flotilla::object::Object| (o.object_ref(), o.value.clone());
    let ours: BTreeMap<_, _> = ours.iter().map(key).collect();
    let theirs: BTreeMap<_, _> = theirs.iter().map(key).collect();
    assert!(
        ours == theirs,
        "{name}: Flotilla's build differs from kustomize's"
    );
}

/// The `count` conformance fixtures with the most objects in their expected output.
fn largest_fixtures(count: usize) -> Vec<(String, PathBuf, PathBuf)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kustomize");
    let mut sized: Vec<(usize, String, PathBuf)> = std::fs::read_dir(&dir)
        .expect("fixtures directory")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("kustomization.yaml").is_file())
        .map(|p| {
            let expected = std::fs::read_to_string(p.join("expected.yaml")).unwrap_or_default();
            let documents =
                expected.matches("\nkind: ").count() + usize::from(expected.starts_with("kind: "));
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (documents, format!("fixture {name}"), p)
        })
        .collect();
    sized.sort_by_key(|s| std::cmp::Reverse(s.0));
    sized
        .into_iter()
        .take(count)
        .map(|(_, name, path)| (name, path, PathBuf::from(".")))
        .collect()
}

fn write(root: &Path, path: &str, text: &str) {
    let path = root.join(path);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("create directory");
    std::fs::write(path, text).expect("write file");
}

const APP: &str = r#"---
apiVersion: apps/v1
kind: Deployment
metadata: {name: NAME, labels: {app: NAME, tier: TIER}}
spec:
  selector: {matchLabels: {app: NAME}}
  template:
    metadata: {labels: {app: NAME, tier: TIER}}
    spec:
      serviceAccountName: NAME
      containers:
        - name: app
          image: registry.example.com/team/NAME:1.0
          args: [--port=8080]
          envFrom: [{configMapRef: {name: NAME-settings}}]
          ports: [{containerPort: 8080, protocol: TCP}]
          resources: {requests: {cpu: 100m, memory: 128Mi}}
---
apiVersion: v1
kind: Service
metadata: {name: NAME, labels: {app: NAME}}
spec:
  selector: {app: NAME}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: NAME}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: NAME}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: NAME}
  minReplicas: 2
  maxReplicas: 10
  metrics: [{type: Resource, resource: {name: cpu, target: {type: Utilization, averageUtilization: 70}}}]
"#;

/// A base of `apps` apps, a component and two overlays.
fn write_tree(root: &Path, apps: usize) {
    let mut resources = String::new();
    let mut generators = String::from("configMapGenerator:\n");
    for i in 0..apps {
        let tier = ["web", "api", "worker"][i % 3];
        resources.push_str(
            &APP.replace("NAME", &format!("app{i}"))
                .replace("TIER", tier),
        );
        let _ = writeln!(
            generators,
            "- name: app{i}-settings\n  literals: [LOG=info, APP=app{i}]"
        );
    }
    write(root, "base/apps.yaml", &resources);
    write(
        root,
        "base/kustomization.yaml",
        &format!("resources: [apps.yaml]\n{generators}"),
    );
    write(
        root,
        "components/monitoring/kustomization.yaml",
        "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\n\
         labels:\n- pairs: {monitoring: enabled}\n\
         patches:\n- target: {kind: Deployment, labelSelector: tier=web}\n  patch: |\n    - op: add\n      path: /spec/template/metadata/annotations\n      value: {prometheus.io/scrape: \"true\"}\n\
         configMapGenerator:\n- name: app0-settings\n  behavior: merge\n  literals: [METRICS=on]\n",
    );
    for (overlay, replicas) in [("staging", 1), ("production", 3)] {
        let mut replica_list = String::new();
        for i in (0..apps).step_by(10) {
            let _ = writeln!(replica_list, "- name: app{i}\n  count: {replicas}");
        }
        write(
            root,
            &format!("overlays/{overlay}/kustomization.yaml"),
            &format!(
                "resources: [../../base]\ncomponents: [../../components/monitoring]\n\
                 namePrefix: {overlay}-\nnamespace: {overlay}\n\
                 commonLabels: {{env: {overlay}}}\ncommonAnnotations: {{owner: platform}}\n\
                 images:\n- name: registry.example.com/team/app1\n  newTag: \"2.0\"\n\
                 replicas:\n{replica_list}\
                 patches:\n- target: {{kind: Deployment, labelSelector: tier=worker}}\n  patch: |\n    - op: replace\n      path: /spec/template/spec/containers/0/resources/requests/cpu\n      value: 500m\n\
                 replacements:\n- source: {{kind: Service, name: app0}}\n  targets:\n  - select: {{kind: Deployment, name: app1}}\n    fieldPaths: [spec.template.metadata.annotations.backend]\n    options: {{create: true}}\n"
            ),
        );
    }
}
