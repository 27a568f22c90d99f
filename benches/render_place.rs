//! `just bench`: render + placement of a generated fleet (1,000 clusters x 100 resources).
//!
//! Writes the fleet repo to a temporary directory, then times `render_tree` + `plan` over a
//! few runs and prints the best and median wall time and the process's peak RSS. Single
//! threaded, so the figure is for one core. Target (DESIGN.md section 6): <= 2 s.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use flotilla::placement::plan;
use flotilla::render::render_tree;

const CLUSTERS: usize = 1_000;
const RESOURCES: usize = 100;
const RUNS: usize = 5;

fn main() {
    let dir = tempfile::tempdir().expect("temporary directory");
    write_fleet(dir.path());
    if let Ok(keep) = std::env::var("FLOTILLA_BENCH_KEEP") {
        let _ = std::fs::create_dir_all(&keep);
        for f in ["fleet.yaml", "apps.yaml"] {
            let _ = std::fs::copy(dir.path().join(f), Path::new(&keep).join(f));
        }
    }

    let mut times = Vec::new();
    let mut objects = 0;
    for _ in 0..RUNS {
        let start = Instant::now();
        let rendered = render_tree(dir.path(), Path::new(".")).expect("render");
        let plan = plan(&rendered).expect("plan");
        times.push(start.elapsed());
        objects = plan.desired.values().map(Vec::len).sum();
        assert!(plan.errors.is_empty(), "{:?}", plan.errors.first());
        // A fleet where nothing is placed would measure nothing.
        assert!(
            objects > CLUSTERS * RESOURCES / 10,
            "only {objects} objects placed"
        );
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "render+placement {CLUSTERS} clusters x {RESOURCES} resources -> {objects} cluster objects: \
         best {:.0} ms, median {:.0} ms over {RUNS} runs (target <= 2000 ms, one core); peak RSS {} MiB",
        ms(times[0]),
        ms(times[RUNS / 2]),
        peak_rss_mib().map_or("?".into(), |m| m.to_string()),
    );
}

/// Peak resident set size from /proc (Linux).
fn peak_rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

const DEPLOYMENT: &str = r#"---
apiVersion: apps/v1
kind: Deployment
metadata: {name: NAME, namespace: NAMESPACE, labels: {app: NAME}}
spec:
  replicas: REPLICAS
  selector: {matchLabels: {app: NAME}}
  template:
    metadata: {labels: {app: NAME}}
    spec:
      containers:
        - name: app
          image: registry.example.com/team/NAME:1.0
          args: [--port=8080]
          ports: [{containerPort: 8080, protocol: TCP}]
          resources: {requests: {cpu: 100m, memory: 128Mi}}
"#;

/// A fleet of clusters over 12 regions and 3 providers, and a mix of policies: a third of
/// the apps duplicated to a label-selected tier, a third divided by static weights over four
/// clusters, a third spread by region; every app gets a cluster-wide registry override.
fn write_fleet(root: &Path) {
    let providers = ["aws", "gcp", "alibaba"];
    let mut fleet = String::from(
        "apiVersion: fleet.kurator.dev/v1alpha1\nkind: Fleet\nmetadata: {name: bench, namespace: flotilla-system}\nspec:\n  clusters:\n",
    );
    for i in 0..CLUSTERS {
        let _ = writeln!(
            fleet,
            "    - {{name: c{i:04}, provider: {}, region: r{:02}, zones: [r{:02}-a], labels: {{tier: t{}, env: prod}}}}",
            providers[i % 3],
            i % 12,
            i % 12,
            i % 4
        );
    }
    std::fs::write(root.join("fleet.yaml"), fleet).unwrap();

    let mut apps = String::new();
    for r in 0..RESOURCES {
        apps.push_str(
            &DEPLOYMENT
                .replace("NAMESPACE", &format!("ns{}", r % 10))
                .replace("NAME", &format!("app{r}"))
                .replace("REPLICAS", &(10 + r % 7).to_string()),
        );
        let placement = match r % 3 {
            0 => format!("clusterAffinity: {{labelSelector: {{matchLabels: {{tier: t{}}}}}}}", r % 4),
            1 => format!(
                "clusterAffinity: {{clusterNames: [c{a:04}, c{b:04}, c{c:04}, c{d:04}]}}\n    replicaScheduling:\n      replicaSchedulingType: Divided\n      weightPreference:\n        staticWeightList:\n          - {{targetCluster: {{clusterNames: [c{a:04}]}}, weight: 60}}\n          - {{targetCluster: {{clusterNames: [c{b:04}, c{c:04}]}}, weight: 30}}\n          - {{targetCluster: {{clusterNames: [c{d:04}]}}, weight: 10}}",
                a = r, b = r + 1, c = r + 2, d = r + 3
            ),
            _ => "spreadConstraints: [{spreadByField: region, minGroups: 3, maxGroups: 6}, {spreadByField: cluster, minGroups: 3, maxGroups: 24}]".into(),
        };
        let _ = write!(
            apps,
            "---\napiVersion: policy.karmada.io/v1alpha1\nkind: PropagationPolicy\nmetadata: {{name: app{r}, namespace: ns{ns}}}\n\
             spec:\n  resourceSelectors: [{{apiVersion: apps/v1, kind: Deployment, name: app{r}}}]\n  placement:\n    {placement}\n",
            ns = r % 10
        );
    }
    apps.push_str(
        "---\napiVersion: policy.karmada.io/v1alpha1\nkind: ClusterOverridePolicy\nmetadata: {name: regional-mirror}\nspec:\n  resourceSelectors: [{apiVersion: apps/v1, kind: Deployment}]\n  overrideRules:\n    - targetCluster: {fieldSelector: {matchExpressions: [{key: provider, operator: In, values: [alibaba]}]}}\n      overriders:\n        imageOverrider: [{component: Registry, operator: replace, value: registry.cn-hangzhou.aliyuncs.com}]\n        argsOverrider: [{containerName: app, operator: add, value: [--mirror=cn]}]\n",
    );
    std::fs::write(root.join("apps.yaml"), apps).unwrap();
}
