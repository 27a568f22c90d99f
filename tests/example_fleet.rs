//! The example fleet in `examples/fleet-repo` plans exactly as its README says.

use std::path::Path;

use flotilla::object::Object;
use flotilla::placement::{Plan, plan};
use flotilla::render::render_tree;
use serde_json::Value;

#[path = "support/tools.rs"]
mod tools;

fn example_plan() -> Plan {
    // The example's status-page app is a Helm chart.
    tools::use_helm();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/fleet-repo");
    let rendered = render_tree(&root, Path::new(".")).expect("example renders");
    plan(&rendered).expect("example plans")
}

fn replicas(plan: &Plan, name: &str) -> Vec<(String, u64)> {
    let resource = plan
        .resources
        .iter()
        .find(|r| r.resource.kind == "Deployment" && r.resource.name == name)
        .unwrap_or_else(|| panic!("no Deployment {name} in the plan"));
    resource
        .targets
        .iter()
        .map(|t| (t.cluster.clone(), t.replicas.expect("replicas")))
        .collect()
}

fn object<'a>(plan: &'a Plan, cluster: &str, kind: &str, name: &str) -> Option<&'a Object> {
    plan.desired[cluster]
        .iter()
        .find(|o| o.kind() == kind && o.name() == name)
}

fn container(object: &Object) -> &Value {
    &object.value["spec"]["template"]["spec"]["containers"][0]
}

fn pairs(list: &[(&str, u64)]) -> Vec<(String, u64)> {
    list.iter().map(|(c, r)| (c.to_string(), *r)).collect()
}

#[test]
fn example_has_a_realistic_fleet_and_a_clean_plan() {
    let plan = example_plan();
    assert!(plan.clusters.len() >= 4);
    let regions: std::collections::BTreeSet<_> = plan
        .clusters
        .iter()
        .filter_map(|c| c.region.clone())
        .collect();
    let providers: std::collections::BTreeSet<_> = plan
        .clusters
        .iter()
        .filter_map(|c| c.provider.clone())
        .collect();
    assert!(
        regions.len() >= 2 && providers.len() >= 3,
        "{regions:?} {providers:?}"
    );
    assert!(plan.errors.is_empty(), "{:?}", plan.errors);
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
}

#[test]
fn weighted_apps_divide_as_documented() {
    let plan = example_plan();
    assert_eq!(
        replicas(&plan, "nginx"),
        pairs(&[("cluster-hangzhou", 6), ("cluster-shanghai", 4)])
    );
    assert_eq!(
        replicas(&plan, "model-server"),
        pairs(&[("cluster-shanghai", 3), ("ondemand-cluster", 7)])
    );
    assert_eq!(
        replicas(&plan, "batch-worker"),
        pairs(&[("ondemand-cluster", 2), ("spot-cluster", 8)])
    );
}

#[test]
fn global_app_gets_regional_registry_and_args() {
    let plan = example_plan();
    let expect = [
        (
            "cluster-hangzhou",
            "registry.cn-hangzhou.aliyuncs.com/web/global-web:1.4.2",
            "--region=cn-east-1",
            false,
        ),
        (
            "cluster-shanghai",
            "registry.cn-hangzhou.aliyuncs.com/web/global-web:1.4.2",
            "--region=cn-east-1",
            false,
        ),
        (
            "cluster-frankfurt",
            "123456789012.dkr.ecr.eu-central-1.amazonaws.com/web/global-web:1.4.2",
            "--region=eu-central-1",
            true,
        ),
        (
            "spot-cluster",
            "harbor.us-central1.example.com/web/global-web:1.4.2",
            "--region=us-central1",
            false,
        ),
        (
            "ondemand-cluster",
            "harbor.us-central1.example.com/web/global-web:1.4.2",
            "--region=us-central1",
            false,
        ),
    ];
    for (cluster, image, region_arg, gdpr) in expect {
        let web = object(&plan, cluster, "Deployment", "global-web").expect(cluster);
        let container = container(web);
        assert_eq!(container["image"], image, "{cluster}");
        let args: Vec<&str> = container["args"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(args.contains(&region_arg), "{cluster}: {args:?}");
        assert_eq!(
            args.contains(&"--compliance=gdpr"),
            gdpr,
            "{cluster}: {args:?}"
        );
        assert_eq!(web.value["spec"]["replicas"], 3);
    }
}

#[test]
fn canary_runs_v2_on_one_cluster_behind_a_90_10_virtual_service() {
    let plan = example_plan();
    let with_v2: Vec<&String> = plan
        .desired
        .iter()
        .filter(|(_, objects)| objects.iter().any(|o| o.name() == "reviews-v2"))
        .map(|(cluster, _)| cluster)
        .collect();
    assert_eq!(with_v2, ["cluster-hangzhou"]);
    for cluster in plan.desired.keys() {
        assert!(
            object(&plan, cluster, "Deployment", "reviews-v1").is_some(),
            "{cluster}"
        );
        let vs = object(&plan, cluster, "VirtualService", "reviews").expect(cluster);
        let weights: Vec<u64> = vs.value["spec"]["http"][0]["route"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["weight"].as_u64())
            .collect();
        assert_eq!(weights, [90, 10]);
        assert!(
            object(
                &plan,
                cluster,
                "CustomResourceDefinition",
                "virtualservices.networking.istio.io"
            )
            .is_some()
        );
    }
}

#[test]
fn storage_pool_and_kustomize_app_land_with_their_crd_and_namespace() {
    let plan = example_plan();
    let pool = object(&plan, "cluster-frankfurt", "CephBlockPool", "replicapool").expect("pool");
    assert_eq!(pool.namespace(), "rook-ceph");
    let objects = &plan.desired["cluster-frankfurt"];
    let position = |kind: &str, name: &str| {
        objects
            .iter()
            .position(|o| o.kind() == kind && o.name() == name)
            .unwrap()
    };
    // Apply order: the namespace and the CRD come before the custom resource.
    assert!(position("Namespace", "rook-ceph") < position("CephBlockPool", "replicapool"));
    assert!(
        position("CustomResourceDefinition", "cephblockpools.ceph.rook.io")
            < position("CephBlockPool", "replicapool")
    );
    // The kustomize overlay: prefixed names, hashed ConfigMap referenced by the Deployment.
    let storefront =
        object(&plan, "cluster-frankfurt", "Deployment", "prod-storefront").expect("storefront");
    let config = objects
        .iter()
        .find(|o| o.kind() == "ConfigMap" && o.name().starts_with("prod-storefront-config-"))
        .expect("generated ConfigMap");
    let referenced = serde_json::to_string(container(storefront)).unwrap();
    assert!(referenced.contains(config.name()), "{referenced}");
}

#[test]
fn helm_chart_app_lands_on_production_clusters_with_its_region() {
    let plan = example_plan();
    assert_eq!(
        replicas(&plan, "status-status-page"),
        pairs(&[
            ("cluster-frankfurt", 2),
            ("cluster-hangzhou", 2),
            ("cluster-shanghai", 2),
            ("ondemand-cluster", 2),
        ])
    );
    for (cluster, region) in [
        ("cluster-frankfurt", "eu-central-1"),
        ("cluster-hangzhou", "cn-east-1"),
        ("cluster-shanghai", "cn-east-1"),
        ("ondemand-cluster", "us-central1"),
    ] {
        let deployment = object(&plan, cluster, "Deployment", "status-status-page")
            .unwrap_or_else(|| panic!("{cluster}: no status-status-page"));
        assert_eq!(
            container(deployment)["args"],
            serde_json::json!([
                "--regions-from=/etc/status/regions",
                format!("--region={region}")
            ]),
            "{cluster}"
        );
        assert_eq!(
            container(deployment)["image"],
            "registry.example.com/status-page:4.2.1"
        );
        let regions = object(&plan, cluster, "ConfigMap", "status-status-page-regions")
            .unwrap_or_else(|| panic!("{cluster}: no regions ConfigMap"));
        // The chart's values, with valuesInline's us-central1 endpoint winning.
        assert_eq!(
            regions.value["data"],
            serde_json::json!({
                "cn-east-1": "https://status.cn.example.com",
                "eu-central-1": "https://status.eu.example.com",
                "us-central1": "https://status.us.example.com"
            })
        );
    }
    assert!(object(&plan, "spot-cluster", "Deployment", "status-status-page").is_none());
}
