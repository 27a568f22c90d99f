//! The pure parts of apply: what is added to a body, hashing, ordering, inventory identity.

use serde_json::{Value, json};

use super::cluster::{pending_entry, percent_encode};
use super::prepare::{content_hash, fix_namespace, object_path, wave};
use super::write::UidList;
use super::*;

fn object_ref(api_version: &str, kind: &str, namespace: &str, name: &str) -> ObjectRef {
    let (group, version) = crate::object::split_api_version(api_version);
    ObjectRef {
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
        namespace: namespace.into(),
        name: name.into(),
    }
}

#[test]
fn prepare_adds_the_inventory_label_and_keeps_the_users_labels() {
    let body = prepare_body(
        &json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "a", "labels": {"app": "web"}}}),
        "prod",
        false,
    );
    assert_eq!(
        body["metadata"]["labels"],
        json!({"app": "web", "flotilla.dev/inventory": "prod"})
    );
}

#[test]
fn prepare_sets_the_port_protocol_that_kubernetes_1_20_ssa_needs() {
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"template": {"spec": {
            "containers": [{"name": "web", "ports": [
                {"containerPort": 80},
                {"containerPort": 53, "protocol": "UDP"},
            ]}],
            "initContainers": [{"name": "init", "ports": [{"containerPort": 9000}]}],
        }}}
    });
    let body = prepare_body(&deployment, "prod", true);
    let spec = &body["spec"]["template"]["spec"];
    assert_eq!(spec["containers"][0]["ports"][0]["protocol"], "TCP");
    assert_eq!(spec["containers"][0]["ports"][1]["protocol"], "UDP");
    assert_eq!(spec["initContainers"][0]["ports"][0]["protocol"], "TCP");

    let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                         "spec": {"ports": [{"port": 80}]}});
    assert_eq!(
        prepare_body(&service, "prod", true)["spec"]["ports"][0]["protocol"],
        "TCP"
    );
    // A custom resource with a field called `ports` is not a Service.
    let custom = json!({"apiVersion": "example.com/v1", "kind": "Service",
                        "metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}});
    assert_eq!(
        prepare_body(&custom, "prod", true)["spec"]["ports"][0].get("protocol"),
        None
    );
}

#[test]
fn prepare_turns_numeric_quantities_into_strings() {
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
        "spec": {
            "template": {"spec": {"containers": [{"name": "db",
                "resources": {"limits": {"nvidia.com/gpu": 1, "memory": "1Gi"},
                              "requests": {"cpu": 0.5}}}]}},
            "volumeClaimTemplates": [{"spec": {"resources": {"requests": {"storage": 10}}}}],
        }
    });
    let body = prepare_body(&deployment, "prod", true);
    let resources = &body["spec"]["template"]["spec"]["containers"][0]["resources"];
    assert_eq!(resources["limits"]["nvidia.com/gpu"], "1");
    assert_eq!(resources["limits"]["memory"], "1Gi");
    assert_eq!(resources["requests"]["cpu"], "0.5");
    assert_eq!(
        body["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"],
        "10"
    );
}

#[test]
fn a_current_apiserver_gets_the_object_as_git_has_it_with_only_the_inventory_label() {
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"template": {"spec": {"containers": [{"name": "web",
            "ports": [{"containerPort": 80}],
            "resources": {"limits": {"nvidia.com/gpu": 1}}}]}}}
    });
    let mut expected = deployment.clone();
    expected["metadata"]["labels"] = json!({"flotilla.dev/inventory": "prod"});
    assert_eq!(prepare_body(&deployment, "prod", false), expected);
}

#[test]
fn waves_put_crds_first_workloads_after_their_config_and_custom_resources_last() {
    let namespaced = Resource {
        plural: "x".into(),
        namespaced: true,
    };
    let cluster_scoped = Resource {
        plural: "x".into(),
        namespaced: false,
    };
    let crd = object_ref(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "",
        "a",
    );
    let namespace = object_ref("v1", "Namespace", "", "web");
    let role = object_ref("rbac.authorization.k8s.io/v1", "ClusterRole", "", "r");
    let config_map = object_ref("v1", "ConfigMap", "web", "c");
    let deployment = object_ref("apps/v1", "Deployment", "web", "d");
    let custom = object_ref("networking.istio.io/v1beta1", "VirtualService", "web", "v");
    let waves = [
        wave(&crd, Some(&cluster_scoped)),
        wave(&namespace, Some(&cluster_scoped)),
        wave(&role, Some(&cluster_scoped)),
        wave(&config_map, Some(&namespaced)),
        wave(&deployment, Some(&namespaced)),
        wave(&custom, None),
    ];
    assert_eq!(waves, [0, 1, 2, 3, 4, 5]);
}

#[test]
fn namespaces_follow_the_served_scope() {
    let namespaced = Resource {
        plural: "configmaps".into(),
        namespaced: true,
    };
    let mut config_map = object_ref("v1", "ConfigMap", "", "a");
    let mut body = json!({"metadata": {"name": "a"}});
    fix_namespace(&mut config_map, &mut body, Some(&namespaced));
    assert_eq!(config_map.namespace, "default");
    assert_eq!(body["metadata"]["namespace"], "default");

    let cluster_scoped = Resource {
        plural: "clusterroles".into(),
        namespaced: false,
    };
    let mut role = object_ref("rbac.authorization.k8s.io/v1", "ClusterRole", "web", "r");
    let mut body = json!({"metadata": {"name": "r", "namespace": "web"}});
    fix_namespace(&mut role, &mut body, Some(&cluster_scoped));
    assert_eq!(role.namespace, "");
    assert_eq!(body["metadata"].get("namespace"), None);
    assert_eq!(
        object_path(&role, &cluster_scoped),
        "/apis/rbac.authorization.k8s.io/v1/clusterroles/r"
    );
    assert_eq!(
        object_path(&config_map, &namespaced),
        "/api/v1/namespaces/default/configmaps/a"
    );
}

#[test]
fn a_content_change_changes_the_hash_and_key_order_does_not() {
    let a = json!({"kind": "ConfigMap", "data": {"a": "1", "b": "2"}});
    let reordered = json!({"data": {"b": "2", "a": "1"}, "kind": "ConfigMap"});
    let changed = json!({"kind": "ConfigMap", "data": {"a": "1", "b": "3"}});
    let hash = |value: &Value| content_hash(&value.to_string());
    assert_eq!(hash(&a), hash(&reordered));
    assert_ne!(hash(&a), hash(&changed));
}

#[test]
fn the_set_hash_follows_the_entries() {
    let entry = |name: &str, hash: &str| Entry {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        namespace: "web".into(),
        name: name.into(),
        hash: hash.into(),
        uid: format!("uid-{name}"),
        created: true,
        pending: false,
    };
    let inventory = |entries: Vec<Entry>| Inventory {
        entries: entries.into_iter().map(|e| (e.object_ref(), e)).collect(),
    };
    let one = inventory(vec![entry("a", "h1"), entry("b", "h2")]);
    let same = inventory(vec![entry("b", "h2"), entry("a", "h1")]);
    let other_content = inventory(vec![entry("a", "h1"), entry("b", "h3")]);
    let fewer = inventory(vec![entry("a", "h1")]);
    assert_eq!(one.set_hash(), same.set_hash());
    assert_ne!(one.set_hash(), other_content.set_hash());
    assert_ne!(one.set_hash(), fewer.set_hash());
}

#[test]
fn label_selectors_are_percent_encoded() {
    assert_eq!(
        percent_encode("flotilla.dev/inventory=prod"),
        "flotilla.dev%2Finventory%3Dprod"
    );
}

#[test]
fn apply_queries_force_the_flotilla_field_manager() {
    assert_eq!(apply_query(false), "fieldManager=flotilla&force=true");
    assert_eq!(
        apply_query(true),
        "fieldManager=flotilla&force=true&dryRun=All"
    );
}

fn pending(name: &str) -> Entry {
    pending_entry(&ObjectRef {
        group: String::new(),
        version: "v1".into(),
        kind: "ConfigMap".into(),
        namespace: "web".into(),
        name: name.into(),
    })
}

fn live_config_map(uid: &str, inventory_label: Option<&str>) -> Value {
    let mut live = json!({"apiVersion": "v1", "kind": "ConfigMap",
                          "metadata": {"name": "a", "namespace": "web", "uid": uid}});
    if let Some(label) = inventory_label {
        live["metadata"]["labels"] = json!({INVENTORY_LABEL: label});
    }
    live
}

#[test]
fn a_pending_object_that_exists_with_the_syncs_label_was_created_by_flotilla() {
    let resolved = inventory::resolve_pending(
        &pending("a"),
        Some(&live_config_map("uid-a", Some("prod"))),
        "prod",
    )
    .expect("Flotilla created it");
    assert!(resolved.created && !resolved.pending);
    assert_eq!(resolved.uid, "uid-a");
    // The hash is unknown: the next apply sends it again.
    assert_eq!(resolved.hash, "");
}

#[test]
fn a_pending_object_that_is_absent_or_not_the_syncs_is_dropped() {
    assert_eq!(
        inventory::resolve_pending(&pending("a"), None, "prod"),
        None
    );
    // Another sync's object, or one nobody labelled: not this sync's creation.
    for label in [Some("staging"), None] {
        let live = live_config_map("uid-a", label);
        assert_eq!(
            inventory::resolve_pending(&pending("a"), Some(&live), "prod"),
            None
        );
    }
}

#[test]
fn pending_entries_round_trip_and_old_inventories_have_none() {
    let stored = serde_json::to_value(pending("a")).expect("json");
    assert_eq!(stored["pending"], json!(true));
    let done = Entry {
        pending: false,
        created: true,
        ..pending("b")
    };
    // Written only when true: inventories of finished syncs look as they did.
    assert!(
        serde_json::to_value(&done)
            .expect("json")
            .get("pending")
            .is_none()
    );
    let old: Entry = serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "namespace": "web", "name": "a", "hash": "h", "uid": "u", "created": true}))
    .expect("an inventory written before pending entries");
    assert!(!old.pending);
    let inventory = Inventory {
        entries: [pending("a"), done]
            .into_iter()
            .map(|e| (e.object_ref(), e))
            .collect(),
    };
    assert!(inventory.has_pending());
}

#[test]
fn an_empty_metadata_list_with_null_items_reads_as_empty() {
    // What the apiserver answers for an empty PartialObjectMetadataList: taking it as
    // unreadable would take every object as present and lose crash safety.
    let list: UidList =
        serde_json::from_str(r#"{"kind":"PartialObjectMetadataList","items":null}"#)
            .expect("an empty list");
    assert_eq!(list.items.into_iter().flatten().count(), 0);
}
