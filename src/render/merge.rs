//! Strategic merge patches (built-in kinds) and JSON merge patches (custom resources), as
//! kustomize applies them.

use serde_json::{Map, Value};

/// Why a strategic merge patch cannot be applied to an object.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// A list that merges by key holds something other than maps (in the object or the patch).
    #[error("{field}: expected a list of maps")]
    NotAListOfMaps {
        /// The list's field.
        field: String,
    },
    /// A patch element of a list that merges by key lacks the key.
    #[error(
        "{field}: element has no merge key {key:?} (kustomize would empty the whole list; give \
         each element its {key:?})"
    )]
    NoMergeKey {
        /// The list's field.
        field: String,
        /// The merge key (`name`, `containerPort`, ...).
        key: &'static str,
    },
}

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
/// `tolerations`, `envFrom`, `readinessGates` and the like. kustomize knows the types of
/// Kubernetes 1.21: a newer list (`resourceClaims`, `schedulingGates`) is replaced too, whatever
/// key newer releases give it.
fn list_strategy(field: &str, elements: &[Value]) -> ListStrategy {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        // A ServiceAccount's `secrets`; webhook configurations' `webhooks`.
        | "secrets"
        | "webhooks" => ListStrategy::MergeByKey("name"),
        "volumeMounts" => ListStrategy::MergeByKey("mountPath"),
        "volumeDevices" => ListStrategy::MergeByKey("devicePath"),
        "hostAliases" => ListStrategy::MergeByKey("ip"),
        "topologySpreadConstraints" => ListStrategy::MergeByKey("topologyKey"),
        "conditions" => ListStrategy::MergeByKey("type"),
        "ownerReferences" => ListStrategy::MergeByKey("uid"),
        // Container ports merge by containerPort, Service ports by port (and by protocol too
        // once an element names one: `merge_by_two_keys`).
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

/// Applies a strategic merge patch to `target` in place.
pub fn strategic_merge(target: &mut Value, patch: &Value) -> Result<(), MergeError> {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            merge_map(target, patch)?;
            // A ServiceAccount's `imagePullSecrets` has no merge key (a pod's has `name`):
            // the patch's list replaces it.
            if target.get("kind").and_then(Value::as_str) == Some("ServiceAccount")
                && let Some(list @ Value::Array(_)) = patch.get("imagePullSecrets")
            {
                target.insert("imagePullSecrets".into(), strip_directives(list));
            }
            Ok(())
        }
        (target, patch) => {
            *target = strip_directives(patch);
            Ok(())
        }
    }
}

fn merge_map(
    target: &mut Map<String, Value>,
    patch: &Map<String, Value>,
) -> Result<(), MergeError> {
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

fn merge_list(field: &str, target: &mut Vec<Value>, patch: &[Value]) -> Result<(), MergeError> {
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
        ListStrategy::MergeByKey(key)
            if second_key(field).is_some_and(|second| {
                target
                    .iter()
                    .chain(patch)
                    .any(|e| !text(e, second).is_empty())
            }) =>
        {
            let keys = [key, second_key(field).unwrap_or_default()];
            *target = merge_by_two_keys(field, std::mem::take(target), patch, keys)?;
        }
        ListStrategy::MergeByKey(key) => {
            // kyaml's order (observed with kustomize v5.5.0): the patch's elements come first,
            // in patch order, then the original elements the patch did not mention.
            let mut original = std::mem::take(target);
            let mut merged = Vec::with_capacity(original.len() + patch.len());
            for element in patch {
                let Some(element_map) = element.as_object() else {
                    return Err(MergeError::NotAListOfMaps {
                        field: field.to_string(),
                    });
                };
                let Some(id) = element_map.get(key) else {
                    // kyaml empties the whole list for such an element (observed with
                    // kustomize v5.5.0), which is never what the patch's author meant.
                    return Err(MergeError::NoMergeKey {
                        field: field.to_string(),
                        key,
                    });
                };
                let position = original.iter().position(|e| e.get(key) == Some(id));
                let delete = element_map.get("$patch").and_then(Value::as_str) == Some("delete");
                match (position, delete) {
                    (Some(i), true) => {
                        original.remove(i);
                    }
                    (None, true) => {}
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

/// The text of a scalar field of a list element, `""` when missing (kyaml's ElementValuesList).
fn text(element: &Value, key: &str) -> String {
    match element.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

/// kyaml's ElementSetter test: the element has each key that `values` gives (`""` only asks
/// for the field to be there), with that value.
fn setter_matches(element: &Value, keys: &[&str; 2], values: &[String]) -> bool {
    values
        .iter()
        .zip(keys)
        .all(|(value, key)| match element.get(*key) {
            None | Some(Value::Null) => false,
            Some(_) => value.is_empty() || text(element, key) == *value,
        })
}

/// The second of the two list-map keys of the Kubernetes schema kustomize merges with.
fn second_key(field: &str) -> Option<&'static str> {
    match field {
        "ports" => Some("protocol"),
        "topologySpreadConstraints" => Some("whenUnsatisfiable"),
        _ => None,
    }
}

/// Merges a list with two list-map keys (ports: port or containerPort and protocol; spread
/// constraints: topologyKey and whenUnsatisfiable) once some element has the second: kustomize's
/// kyaml then keys elements by both (walk/associative_sequence.go), with its quirks kept: a
/// patch element without the second key does not reach an original element that has it (the
/// patch is dropped), an original element without it shadows a patch element with it, and new
/// patch elements come first, then the original ones in their order.
fn merge_by_two_keys(
    field: &str,
    original: Vec<Value>,
    patch: &[Value],
    keys: [&str; 2],
) -> Result<Vec<Value>, MergeError> {
    if original.iter().chain(patch).any(|e| !e.is_object()) {
        return Err(MergeError::NotAListOfMaps {
            field: field.to_string(),
        });
    }
    // Every (key, protocol) pair, the patch's first; then kyaml's mergeValues: two pairs that
    // share a value and do not conflict where both are set become one.
    let mut pairs: Vec<[String; 2]> = Vec::new();
    for pair in patch
        .iter()
        .chain(&original)
        .map(|e| keys.map(|k| text(e, k)))
    {
        if !pairs.contains(&pair) {
            pairs.push(pair);
        }
    }
    for i in 0..pairs.len() {
        for j in 0..pairs.len() {
            let (a, b) = (&pairs[i], &pairs[j]);
            let common = (0..2).any(|n| a[n] == b[n]);
            let conflict = (0..2).any(|n| a[n] != b[n] && !a[n].is_empty() && !b[n].is_empty());
            if common && !conflict {
                let merged = [0, 1].map(|n| {
                    if a[n].is_empty() {
                        b[n].clone()
                    } else {
                        a[n].clone()
                    }
                });
                pairs[i] = merged.clone();
                pairs[j] = merged;
            }
        }
    }
    // The elements a pair reaches: each of its non-empty values present and equal.
    let found_by = |e: &Value, pair: &[String; 2]| {
        pair.iter().any(|v| !v.is_empty())
            && (0..2).all(|n| pair[n].is_empty() || text(e, keys[n]) == pair[n])
    };
    let mut dest = original;
    let mut items: Vec<Value> = Vec::new();
    for pair in &pairs {
        let at = dest.iter().position(|e| found_by(e, pair));
        let from_patch = patch.iter().find(|e| found_by(e, pair));
        let delete = from_patch
            .and_then(|p| p.get("$patch"))
            .and_then(Value::as_str)
            == Some("delete");
        let merged = match (at, from_patch) {
            (_, Some(_)) if delete => None,
            (Some(i), Some(p)) => {
                strategic_merge(&mut dest[i], p)?;
                Some(dest[i].clone())
            }
            (Some(i), None) => Some(dest[i].clone()),
            (None, Some(p)) => Some(strip_directives(p)),
            (None, None) => None,
        };
        let Some(merged) = merged.filter(|m| m.as_object().is_some_and(|m| !m.is_empty())) else {
            dest.retain(|e| !setter_matches(e, &keys, pair));
            continue;
        };
        // ElementSetter: replace what the pair matches, else append.
        let mut replaced = false;
        for item in items.iter_mut().filter(|e| setter_matches(e, &keys, pair)) {
            *item = merged.clone();
            replaced = true;
        }
        if !replaced {
            items.push(merged);
        }
    }
    // kyaml's appendListNode: each original element (merged in place) moves to the end, after
    // removing what its present keys match; one lacking a key is appended once more first.
    for element in dest {
        let mut present = Vec::new();
        for key in keys {
            if element.get(key).is_some_and(|v| !v.is_null()) {
                present.push(text(&element, key));
            } else {
                items.push(element.clone());
            }
        }
        items.retain(|e| !setter_matches(e, &keys, &present));
        items.push(element);
    }
    Ok(items)
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
        let error = strategic_merge(&mut target, &patch)
            .unwrap_err()
            .to_string();
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
        // A patch port without a protocol reaches neither (kustomize v5.5.0 drops it).
        let before = target.clone();
        let patch = json!({"spec": {"ports": [{"port": 53, "targetPort": 5353}]}});
        strategic_merge(&mut target, &patch).unwrap();
        assert_eq!(target, before);
    }

    #[test]
    fn lists_with_two_keys_merge_like_kyaml() {
        // Each case as kustomize v5.5 builds it: (original, patch, result).
        let cases = [
            // No protocol anywhere: merged by port.
            (
                json!([{"port": 80, "name": "a"}]),
                json!([{"port": 80, "name": "b"}]),
                json!([{"port": 80, "name": "b"}]),
            ),
            // A patch port without the original's protocol is dropped.
            (
                json!([{"port": 80, "protocol": "TCP", "name": "a"}]),
                json!([{"port": 80, "name": "b"}]),
                json!([{"port": 80, "protocol": "TCP", "name": "a"}]),
            ),
            // An original port without a protocol shadows the patch's.
            (
                json!([{"port": 80, "name": "a"}]),
                json!([{"port": 80, "protocol": "TCP", "name": "b"}]),
                json!([{"port": 80, "name": "a"}]),
            ),
            // New ports first, then the original ones in their order (merged in place).
            (
                json!([{"port": 80, "name": "a"}, {"port": 443, "name": "s"}]),
                json!([{"port": 443, "name": "b"}, {"port": 53, "protocol": "UDP", "name": "d"}]),
                json!([{"port": 53, "protocol": "UDP", "name": "d"}, {"port": 80, "name": "a"},
                    {"port": 443, "name": "b"}]),
            ),
            (
                json!([{"port": 80, "protocol": "TCP"}]),
                json!([{"port": 80, "protocol": "TCP", "$patch": "delete"}]),
                json!([]),
            ),
        ];
        let mut target = json!({"topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"},
            {"maxSkew": 1, "topologyKey": "host", "whenUnsatisfiable": "DoNotSchedule"}]});
        let patch = json!({"topologySpreadConstraints": [
            {"topologyKey": "zone", "maxSkew": 2},
            {"topologyKey": "host", "maxSkew": 3, "whenUnsatisfiable": "ScheduleAnyway"}]});
        strategic_merge(&mut target, &patch).unwrap();
        assert_eq!(
            target["topologySpreadConstraints"],
            json!([
                {"maxSkew": 3, "topologyKey": "host", "whenUnsatisfiable": "ScheduleAnyway"},
                {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"},
                {"maxSkew": 1, "topologyKey": "host", "whenUnsatisfiable": "DoNotSchedule"}
            ])
        );
        for (original, patch, expected) in cases {
            let mut target = json!({"spec": {"ports": original}});
            strategic_merge(&mut target, &json!({"spec": {"ports": patch}})).unwrap();
            assert_eq!(target["spec"]["ports"], expected, "patch {patch}");
        }
    }
}
