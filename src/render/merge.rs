//! Strategic merge patches (built-in kinds) and JSON merge patches (custom resources), as
//! kustomize applies them.

use serde_json::{Map, Value};

/// How lists of one field are merged by a strategic merge patch.
enum ListStrategy {
    /// Elements are maps merged by this key; new ones are appended.
    MergeByKey(&'static str),
    /// A list of scalars merged as a set (`finalizers`).
    Union,
    /// The patch's list replaces the original.
    Replace,
}

/// The list-merge keys of the Kubernetes API types that fleet repos patch. A field that is not
/// named here is replaced wholesale, as the API types declare for `args`, `command`,
/// `tolerations`, `envFrom` and the like.
fn list_strategy(field: &str, elements: &[Value]) -> ListStrategy {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims" => ListStrategy::MergeByKey("name"),
        "volumeMounts" => ListStrategy::MergeByKey("mountPath"),
        "volumeDevices" => ListStrategy::MergeByKey("devicePath"),
        "hostAliases" => ListStrategy::MergeByKey("ip"),
        "topologySpreadConstraints" => ListStrategy::MergeByKey("topologyKey"),
        "readinessGates" => ListStrategy::MergeByKey("conditionType"),
        "conditions" => ListStrategy::MergeByKey("type"),
        "ownerReferences" => ListStrategy::MergeByKey("uid"),
        // Container ports merge by containerPort, Service ports by port.
        "ports" => {
            let container_ports = elements.iter().any(|e| e.get("containerPort").is_some());
            if container_ports {
                ListStrategy::MergeByKey("containerPort")
            } else {
                ListStrategy::MergeByKey("port")
            }
        }
        "finalizers" => ListStrategy::Union,
        _ => ListStrategy::Replace,
    }
}

/// The second list-map key kyaml merges these lists by (the API's
/// `x-kubernetes-list-map-keys`): `53/UDP` and `53/TCP` are two ports. It only tells elements
/// apart when both carry it; when either lacks it kyaml matches on the first key alone.
fn secondary_key(field: &str) -> Option<&'static str> {
    match field {
        "ports" => Some("protocol"),
        "topologySpreadConstraints" => Some("whenUnsatisfiable"),
        _ => None,
    }
}

/// Applies a strategic merge patch to `target` in place.
pub fn strategic_merge(target: &mut Value, patch: &Value) -> Result<(), String> {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => merge_map(target, patch),
        (target, patch) => {
            *target = strip_directives(patch);
            Ok(())
        }
    }
}

fn merge_map(target: &mut Map<String, Value>, patch: &Map<String, Value>) -> Result<(), String> {
    if patch.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replacement = patch.clone();
        replacement.remove("$patch");
        *target = match strip_directives(&Value::Object(replacement)) {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        return Ok(());
    }
    for (key, patch_value) in patch {
        // kustomize's merge (kyaml) knows no `$setElementOrder/<list>`: it copies the field
        // into the object like any other, so it is merged as data here too.
        if key == "$patch" || key == "$retainKeys" {
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Value::Array(remove)) =
                (target.get_mut(field), patch_value)
            {
                list.retain(|v| !remove.contains(v));
            }
            continue;
        }
        if patch_value.is_null()
            || patch_value.get("$patch").and_then(Value::as_str) == Some("delete")
        {
            target.remove(key);
            continue;
        }
        match (target.get_mut(key), patch_value) {
            (Some(Value::Object(existing)), Value::Object(patch_map)) => {
                merge_map(existing, patch_map)?
            }
            (Some(Value::Array(existing)), Value::Array(patch_list)) => {
                merge_list(key, existing, patch_list)?
            }
            _ => {
                target.insert(key.clone(), strip_directives(patch_value));
            }
        }
    }
    Ok(())
}

fn merge_list(field: &str, target: &mut Vec<Value>, patch: &[Value]) -> Result<(), String> {
    let replace_all = patch
        .iter()
        .any(|e| e.get("$patch").and_then(Value::as_str) == Some("replace"));
    match list_strategy(field, target) {
        // A list without merge semantics is replaced by the patch's list as it stands: kyaml
        // keeps even a `- $patch: replace` element in it (a `$patch` element is a directive
        // only in lists that merge).
        ListStrategy::Replace => {
            *target = patch
                .iter()
                .map(|e| {
                    if e.get("$patch").is_some() {
                        e.clone()
                    } else {
                        strip_directives(e)
                    }
                })
                .collect();
        }
        // `- $patch: replace` anywhere in a merging patch list replaces the whole list.
        _ if replace_all => {
            *target = patch
                .iter()
                .filter(|e| e.get("$patch").is_none())
                .map(strip_directives)
                .collect();
        }
        ListStrategy::Union => {
            for element in patch {
                if !target.contains(element) {
                    target.push(element.clone());
                }
            }
        }
        ListStrategy::MergeByKey(key) => {
            // kyaml's order (observed with kustomize v5.5.0): in a list merged by one key the
            // patch's elements come first, in patch order, then the original elements the
            // patch did not mention; once any element carries the second key of a two-key
            // list (`protocol` of ports) the merged elements stay where they were and only
            // the new ones come first.
            let second = secondary_key(field);
            let in_place = second.is_some_and(|k| {
                patch
                    .iter()
                    .chain(target.iter())
                    .any(|e| e.get(k).is_some())
            });
            let mut original = std::mem::take(target);
            let mut merged = Vec::with_capacity(original.len() + patch.len());
            for element in patch {
                let Some(element_map) = element.as_object() else {
                    return Err(format!("{field}: expected a list of maps"));
                };
                let Some(id) = element_map.get(key) else {
                    // kyaml empties the whole list for such an element (observed with
                    // kustomize v5.5.0), which is never what the patch's author meant.
                    return Err(format!(
                        "{field}: element has no merge key {key:?} (kustomize would empty \
                         the whole list; give each element its {key:?})"
                    ));
                };
                let position = original.iter().position(|e| {
                    e.get(key) == Some(id)
                        && second.is_none_or(|k| match (e.get(k), element_map.get(k)) {
                            (Some(a), Some(b)) => a == b,
                            _ => true,
                        })
                });
                let delete = element_map.get("$patch").and_then(Value::as_str) == Some("delete");
                match (position, delete) {
                    (Some(i), true) => {
                        original.remove(i);
                    }
                    (None, true) => {}
                    (Some(i), false) if in_place => strategic_merge(&mut original[i], element)?,
                    (Some(i), false) => {
                        let mut existing = original.remove(i);
                        strategic_merge(&mut existing, element)?;
                        merged.push(existing);
                    }
                    (None, false) => merged.push(strip_directives(element)),
                }
            }
            merged.extend(original);
            *target = merged;
        }
    }
    Ok(())
}

/// A patch value with its `$patch`-style directives and nulls removed, for inserting as new.
fn strip_directives(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, v)| {
                    (!k.starts_with('$') || k.starts_with("$setElementOrder/")) && !v.is_null()
                })
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(list) => Value::Array(list.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

/// Applies a strategic merge patch to an object without a known schema (a custom resource),
/// as kustomize does: maps merge, `$patch: replace` replaces a map, `$patch: delete` and `null`
/// delete a field; lists and scalars are replaced.
pub fn schemaless_merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = strip_directives(patch);
        return;
    };
    if patch_map.get("$patch").and_then(Value::as_str) == Some("replace") {
        *target = strip_directives(patch);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target_map) = target else {
        return;
    };
    for (key, value) in patch_map {
        if key.starts_with('$') {
            continue;
        }
        if value.is_null() || value.get("$patch").and_then(Value::as_str) == Some("delete") {
            target_map.remove(key);
        } else {
            schemaless_merge(target_map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Value {
        json!({"spec": {"template": {"spec": {
            "containers": [
                {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}],
                 "args": ["--a"], "ports": [{"containerPort": 80, "protocol": "TCP"}]},
                {"name": "sidecar", "image": "side:1"}
            ],
            "volumes": [{"name": "data", "emptyDir": {}}]
        }}}})
    }

    #[test]
    fn containers_merge_by_name_and_new_ones_append() {
        let mut target = deployment();
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "app:2", "env": [{"name": "B", "value": "2"}], "args": ["--b"]},
            {"name": "extra", "image": "extra:1"}
        ]}}}});
        strategic_merge(&mut target, &patch).unwrap();
        let containers = &target["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers[0]["image"], "app:2");
        assert_eq!(
            containers[0]["env"],
            json!([{"name": "B", "value": "2"}, {"name": "A", "value": "1"}])
        );
        assert_eq!(containers[0]["args"], json!(["--b"]), "args are replaced");
        // Patch order first, then the originals the patch left alone.
        assert_eq!(containers[1]["name"], "extra");
        assert_eq!(containers[2]["name"], "sidecar");
    }

    #[test]
    fn delete_directive_and_null_remove() {
        let mut target = deployment();
        let patch = json!({"spec": {"template": {"spec": {
            "containers": [{"name": "sidecar", "$patch": "delete"},
                           {"name": "app", "ports": null}],
            "volumes": [{"$patch": "replace"}, {"name": "cache", "emptyDir": {}}]
        }}}});
        strategic_merge(&mut target, &patch).unwrap();
        let spec = &target["spec"]["template"]["spec"];
        assert_eq!(spec["containers"].as_array().unwrap().len(), 1);
        assert!(spec["containers"][0].get("ports").is_none());
        assert_eq!(spec["volumes"], json!([{"name": "cache", "emptyDir": {}}]));
    }

    #[test]
    fn schemaless_merge_replaces_lists_and_honours_directives() {
        let mut target = json!({"spec": {"list": [1, 2], "keep": 1, "drop": 2, "map": {"a": 1}, "gone": {"b": 1}}});
        let patch = json!({"spec": {"list": [3], "drop": null, "map": {"$patch": "replace", "c": 2}, "gone": {"$patch": "delete"}}});
        schemaless_merge(&mut target, &patch);
        assert_eq!(
            target,
            json!({"spec": {"list": [3], "keep": 1, "map": {"c": 2}}})
        );
    }

    #[test]
    fn atomic_lists_keep_directive_elements_and_set_element_order_is_data() {
        // What kustomize v5.5.0 outputs for these (fixture 88): kyaml treats neither as a
        // directive.
        let mut target = deployment();
        target["spec"]["template"]["spec"]["tolerations"] = json!([{"key": "a"}]);
        let patch = json!({"spec": {"template": {"spec": {
            "tolerations": [{"$patch": "replace"}, {"key": "b"}],
            "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}]
        }}}});
        strategic_merge(&mut target, &patch).unwrap();
        let spec = &target["spec"]["template"]["spec"];
        assert_eq!(
            spec["tolerations"],
            json!([{"$patch": "replace"}, {"key": "b"}])
        );
        assert_eq!(
            spec["$setElementOrder/containers"],
            json!([{"name": "sidecar"}, {"name": "app"}])
        );
    }

    #[test]
    fn element_without_merge_key_is_refused() {
        let mut target = deployment();
        let patch = json!({"spec": {"template": {"spec": {
            "volumes": [{"$patch": "delete", "emptyDir": {}}]
        }}}});
        let error = strategic_merge(&mut target, &patch).unwrap_err();
        assert!(error.contains("no merge key \"name\""), "{error}");
    }

    #[test]
    fn ports_of_one_number_and_two_protocols_are_two_elements() {
        let mut target =
            json!({"spec": {"ports": [{"port": 53, "protocol": "UDP", "name": "dns"}]}});
        let patch = json!({"spec": {"ports": [
            {"port": 53, "protocol": "TCP", "name": "dns-tcp"}
        ]}});
        strategic_merge(&mut target, &patch).unwrap();
        assert_eq!(
            target["spec"]["ports"],
            json!([{"port": 53, "protocol": "TCP", "name": "dns-tcp"},
                   {"port": 53, "protocol": "UDP", "name": "dns"}])
        );
        // Without a protocol on one side the port number alone matches (the first such port);
        // with protocols in the list a merged port keeps its place.
        let patch = json!({"spec": {"ports": [{"port": 53, "targetPort": 5353}]}});
        strategic_merge(&mut target, &patch).unwrap();
        assert_eq!(target["spec"]["ports"][0]["targetPort"], 5353);
        assert_eq!(target["spec"]["ports"][0]["protocol"], "TCP");
        assert_eq!(target["spec"]["ports"].as_array().map(Vec::len), Some(2));
    }
}
