//! Karmada's overriders on plain data: image, command, args, labels, annotations and plaintext
//! (RFC 6902), applied to one cluster's copy of a resource template.

use serde_json::{Value, json};

pub use crate::image::ImageRef;

use super::types::{
    CommandArgsOverrider, FieldOverrider, ImageOverrider, LabelAnnotationOverrider, Overriders,
    PlaintextOverrider,
};

/// The pointer to the container list of an object whose containers the image, command and
/// args overriders touch (see [`crate::kinds::WorkloadKind::karmada_containers`]): by kind
/// alone, as Karmada's overriders switch on the kind.
fn containers_pointer(object: &Value) -> Option<String> {
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    crate::kinds::workload_by_kind(kind)
        .filter(|workload| workload.karmada_containers)
        .map(|workload| workload.containers())
}

/// Applies one rule's overriders in Karmada's order: image, command, args, labels,
/// annotations, field, plaintext. The error names the overrider and path that failed.
pub fn apply_overriders(object: &mut Value, overriders: &Overriders) -> Result<(), OverrideError> {
    let failed = |overrider, index| {
        move |source| OverrideError {
            overrider,
            index,
            source,
        }
    };
    for (i, overrider) in overriders.image_overrider.iter().enumerate() {
        apply_image(object, overrider).map_err(failed("imageOverrider", i))?;
    }
    for (i, overrider) in overriders.command_overrider.iter().enumerate() {
        apply_command_args(object, overrider, "command").map_err(failed("commandOverrider", i))?;
    }
    for (i, overrider) in overriders.args_overrider.iter().enumerate() {
        apply_command_args(object, overrider, "args").map_err(failed("argsOverrider", i))?;
    }
    for (i, overrider) in overriders.labels_overrider.iter().enumerate() {
        apply_metadata_map(object, overrider, "labels").map_err(failed("labelsOverrider", i))?;
    }
    for (i, overrider) in overriders.annotations_overrider.iter().enumerate() {
        apply_metadata_map(object, overrider, "annotations")
            .map_err(failed("annotationsOverrider", i))?;
    }
    for (i, overrider) in overriders.field_overrider.iter().enumerate() {
        apply_field(object, overrider).map_err(failed("fieldOverrider", i))?;
    }
    for (i, overrider) in overriders.plaintext.iter().enumerate() {
        apply_plaintext(object, overrider).map_err(failed("plaintext", i))?;
    }
    Ok(())
}

/// One overrider of a rule failed: which one, and why.
#[derive(Debug, thiserror::Error)]
#[error("{overrider}[{index}]")]
pub struct OverrideError {
    /// The overrider's field in the rule (`imageOverrider`, `plaintext`, ...).
    pub overrider: &'static str,
    /// Its index in that list.
    pub index: usize,
    /// What went wrong.
    #[source]
    pub source: OverriderError,
}

/// Why one overrider cannot apply to an object. Paths are JSON pointers (`/spec/replicas`).
#[derive(Debug, thiserror::Error)]
pub enum OverriderError {
    /// An image overrider's `component` is not one Karmada has.
    #[error("component {component:?} is not Registry, Repository or Tag")]
    ImageComponent {
        /// The component given.
        component: String,
    },
    /// An image overrider's `operator` is not one Karmada has.
    #[error("{component}: operator {operator:?} is not add, remove or replace")]
    ImageOperator {
        /// The component given.
        component: String,
        /// The operator given.
        operator: String,
    },
    /// An operator Karmada does not have for this overrider.
    #[error("operator {operator:?} is not {allowed}")]
    Operator {
        /// The operator given.
        operator: String,
        /// The operators there are (`add or remove`).
        allowed: &'static str,
    },
    /// The path names nothing in the object.
    #[error("{path}: no such path")]
    NoSuchPath {
        /// The path.
        path: String,
    },
    /// The path names something that is not a string.
    #[error("{path}: not a string")]
    NotAString {
        /// The path.
        path: String,
    },
    /// A container's `command` or `args` is not a list.
    #[error("{field} of container {container:?} is not a list")]
    NotAList {
        /// `command` or `args`.
        field: &'static str,
        /// The container's name.
        container: String,
    },
    /// A field overrider's `fieldPath` names nothing.
    #[error("{path}: no such field")]
    NoSuchField {
        /// The path.
        path: String,
    },
    /// A field overrider's `fieldPath` names something that is not a string.
    #[error("{path}: is not a string")]
    FieldNotAString {
        /// The path.
        path: String,
    },
    /// A field overrider without operations.
    #[error("{path}: neither json nor yaml operations")]
    NoOperations {
        /// The path.
        path: String,
    },
    /// A field overrider's string is not YAML (the parser's first line: its message can run
    /// over many).
    #[error("{path}: not YAML: {problem}")]
    NotYaml {
        /// The path.
        path: String,
        /// The first line of the parser's message.
        problem: String,
    },
    /// A field overrider's string is not JSON.
    #[error("{path}: not JSON")]
    NotJson {
        /// The path.
        path: String,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// The operations do not make an RFC 6902 patch (an unknown operator, a bad path).
    #[error("{path}")]
    InvalidPatch {
        /// The path the patch is for.
        path: String,
        /// Why it does not read as a patch.
        #[source]
        source: serde_json::Error,
    },
    /// The patch does not apply (a missing parent, a failed `test`).
    #[error("{path}")]
    Patch {
        /// The path the patch is for.
        path: String,
        /// Why it does not apply.
        #[source]
        source: json_patch::PatchError,
    },
    /// The patched document does not write back as JSON.
    #[error("{path}")]
    WriteJson {
        /// The path.
        path: String,
        /// The writer's error.
        #[source]
        source: serde_json::Error,
    },
    /// The patched document does not write back as YAML.
    #[error("{path}")]
    WriteYaml {
        /// The path.
        path: String,
        /// The writer's error.
        #[source]
        source: serde_saphyr::SerializeError,
    },
}

// ----- images -----

/// Applies one image operation to an image string.
pub fn override_image(image: &str, overrider: &ImageOverrider) -> Result<String, OverriderError> {
    let mut parsed = ImageRef::parse(image);
    let value = overrider.value.as_str();
    match (overrider.component.as_str(), overrider.operator.as_str()) {
        ("Registry", "add") => parsed.registry.push_str(value),
        ("Registry", "replace") => parsed.registry = value.to_string(),
        ("Registry", "remove") => parsed.registry.clear(),
        ("Repository", "add") => parsed.repository.push_str(value),
        ("Repository", "replace") => parsed.repository = value.to_string(),
        ("Repository", "remove") => parsed.repository.clear(),
        ("Tag", "add") => {
            let combined = format!("{}{value}", parsed.tag_or_digest());
            parsed.set_tag_or_digest(&combined);
        }
        ("Tag", "replace") => parsed.set_tag_or_digest(value),
        ("Tag", "remove") => {
            parsed.tag.clear();
            parsed.digest.clear();
        }
        (component @ ("Registry" | "Repository" | "Tag"), operator) => {
            return Err(OverriderError::ImageOperator {
                component: component.to_string(),
                operator: operator.to_string(),
            });
        }
        (component, _) => {
            return Err(OverriderError::ImageComponent {
                component: component.to_string(),
            });
        }
    }
    Ok(parsed.to_string())
}

fn apply_image(object: &mut Value, overrider: &ImageOverrider) -> Result<(), OverriderError> {
    let pointers: Vec<String> = match &overrider.predicate {
        Some(predicate) => vec![predicate.path.clone()],
        None => {
            let Some(list) = containers_pointer(object) else {
                return Ok(());
            };
            let count = object
                .pointer(&list)
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            (0..count).map(|i| format!("{list}/{i}/image")).collect()
        }
    };
    for pointer in pointers {
        let Some(slot) = object.pointer_mut(&pointer) else {
            return Err(OverriderError::NoSuchPath { path: pointer });
        };
        let Some(image) = slot.as_str() else {
            return Err(OverriderError::NotAString { path: pointer });
        };
        *slot = Value::String(override_image(image, overrider)?);
    }
    Ok(())
}

// ----- command and args -----

fn apply_command_args(
    object: &mut Value,
    overrider: &CommandArgsOverrider,
    field: &'static str,
) -> Result<(), OverriderError> {
    let Some(list) = containers_pointer(object) else {
        return Ok(());
    };
    let Some(containers) = object.pointer_mut(&list).and_then(Value::as_array_mut) else {
        return Ok(());
    };
    for container in containers {
        if container.get("name").and_then(Value::as_str) != Some(&overrider.container_name) {
            continue;
        }
        let Some(container) = container.as_object_mut() else {
            continue;
        };
        let current = container.entry(field).or_insert_with(|| json!([]));
        let Some(items) = current.as_array_mut() else {
            return Err(OverriderError::NotAList {
                field,
                container: overrider.container_name.clone(),
            });
        };
        match overrider.operator.as_str() {
            "add" => items.extend(overrider.value.iter().map(|v| json!(v))),
            "remove" => items.retain(|item| {
                !item
                    .as_str()
                    .is_some_and(|s| overrider.value.iter().any(|v| v == s))
            }),
            other => {
                return Err(OverriderError::Operator {
                    operator: other.to_string(),
                    allowed: "add or remove",
                });
            }
        }
    }
    Ok(())
}

// ----- labels and annotations -----

fn apply_metadata_map(
    object: &mut Value,
    overrider: &LabelAnnotationOverrider,
    field: &str,
) -> Result<(), OverriderError> {
    let operator = overrider.operator.as_str();
    if !matches!(operator, "add" | "remove" | "replace") {
        return Err(OverriderError::Operator {
            operator: operator.to_string(),
            allowed: "add, remove or replace",
        });
    }
    let metadata = crate::object::map_at_path(object, &["metadata"]);
    if operator == "add" && !metadata.get(field).is_some_and(Value::is_object) {
        metadata.insert(field.to_string(), json!({}));
    }
    let Some(map) = metadata.get_mut(field).and_then(Value::as_object_mut) else {
        // remove / replace on a missing map change nothing, as in Karmada.
        return Ok(());
    };
    for (key, value) in &overrider.value {
        match operator {
            "add" => {
                map.insert(key.clone(), json!(value));
            }
            "replace" => {
                if let Some(slot) = map.get_mut(key) {
                    *slot = json!(value);
                }
            }
            _ => {
                map.remove(key);
            }
        }
    }
    Ok(())
}

// ----- field -----

/// Karmada's `applyFieldOverriders`: the string at `fieldPath` is parsed (YAML when `yaml` has
/// operations, else JSON), patched, and written back in the same language. JSON comes back
/// compact with its keys in order, as Go's encoder writes it; YAML as Flotilla's YAML writer
/// formats it (Go's may quote or indent differently; the data is the same).
fn apply_field(object: &mut Value, overrider: &FieldOverrider) -> Result<(), OverriderError> {
    let path = &overrider.field_path;
    let slot = object
        .pointer_mut(path)
        .ok_or_else(|| OverriderError::NoSuchField { path: path.clone() })?;
    let Value::String(text) = slot else {
        return Err(OverriderError::FieldNotAString { path: path.clone() });
    };
    let (yaml, operations) = match (&overrider.yaml[..], &overrider.json[..]) {
        ([], []) => return Err(OverriderError::NoOperations { path: path.clone() }),
        ([], json) => (false, json),
        (yaml, _) => (true, yaml),
    };
    let mut document: Value = if yaml {
        // The string comes from Git like any fleet file: read with the same bounds (alias
        // replay, nesting, one-line messages), or an alias bomb costs seconds per cluster.
        serde_saphyr::from_str_with_options(
            text,
            crate::render::load::yaml_options(crate::render::load::Dialect::Kubernetes),
        )
        .map_err(|e| OverriderError::NotYaml {
            path: path.clone(),
            problem: e.to_string().lines().next().unwrap_or("").to_string(),
        })?
    } else {
        serde_json::from_str(text).map_err(|source| OverriderError::NotJson {
            path: path.clone(),
            source,
        })?
    };
    let operations: Vec<Value> = operations
        .iter()
        .map(|op| match op.operator.as_str() {
            "remove" => json!({"op": "remove", "path": op.sub_path}),
            operator => json!({
                "op": operator,
                "path": op.sub_path,
                "value": op.value.clone().unwrap_or(Value::Null),
            }),
        })
        .collect();
    patch(&mut document, Value::Array(operations), path)?;
    *text = if yaml {
        serde_saphyr::to_string(&document).map_err(|source| OverriderError::WriteYaml {
            path: path.clone(),
            source,
        })?
    } else {
        serde_json::to_string(&document).map_err(|source| OverriderError::WriteJson {
            path: path.clone(),
            source,
        })?
    };
    Ok(())
}

// ----- plaintext -----

fn apply_plaintext(
    object: &mut Value,
    overrider: &PlaintextOverrider,
) -> Result<(), OverriderError> {
    let operation = match overrider.operator.as_str() {
        "add" | "replace" => json!({
            "op": overrider.operator,
            "path": overrider.path,
            "value": overrider.value.clone().unwrap_or(Value::Null),
        }),
        "remove" => json!({"op": "remove", "path": overrider.path}),
        other => {
            return Err(OverriderError::Operator {
                operator: other.to_string(),
                allowed: "add, remove or replace",
            });
        }
    };
    patch(object, json!([operation]), &overrider.path)
}

/// Applies `operations`, an RFC 6902 patch as JSON, to `document`; `path` names it in errors.
fn patch(document: &mut Value, operations: Value, path: &str) -> Result<(), OverriderError> {
    let patch: json_patch::Patch =
        serde_json::from_value(operations).map_err(|source| OverriderError::InvalidPatch {
            path: path.to_string(),
            source,
        })?;
    json_patch::patch(document, &patch.0).map_err(|source| OverriderError::Patch {
        path: path.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::chain;

    fn image_op(component: &str, operator: &str, value: &str) -> ImageOverrider {
        ImageOverrider {
            predicate: None,
            component: component.into(),
            operator: operator.into(),
            value: value.into(),
        }
    }

    #[test]
    fn image_parsing_follows_docker_rules_without_normalisation() {
        let plain = ImageRef::parse("nginx:1.27");
        assert_eq!(
            (
                plain.registry.as_str(),
                plain.repository.as_str(),
                plain.tag.as_str()
            ),
            ("", "nginx", "1.27")
        );
        let library = ImageRef::parse("library/nginx");
        assert_eq!(
            library.registry, "",
            "no dot, colon or localhost: not a registry"
        );
        assert_eq!(library.repository, "library/nginx");
        let port = ImageRef::parse("localhost:5000/team/app:2@sha256:abc");
        assert_eq!(port.registry, "localhost:5000");
        assert_eq!(port.repository, "team/app");
        assert_eq!(port.tag, "2");
        assert_eq!(port.digest, "sha256:abc");
        assert_eq!(ImageRef::parse("localhost/app").registry, "localhost");
    }

    #[test]
    fn image_overrider_components_and_operators() {
        let image = "a.io/web/app:1.0";
        assert_eq!(
            override_image(image, &image_op("Registry", "add", ".cn")).unwrap(),
            "a.io.cn/web/app:1.0"
        );
        assert_eq!(
            override_image(image, &image_op("Registry", "replace", "b.io")).unwrap(),
            "b.io/web/app:1.0"
        );
        assert_eq!(
            override_image(image, &image_op("Registry", "remove", "")).unwrap(),
            "web/app:1.0"
        );
        assert_eq!(
            override_image(image, &image_op("Repository", "add", "-gpu")).unwrap(),
            "a.io/web/app-gpu:1.0"
        );
        assert_eq!(
            override_image(image, &image_op("Repository", "replace", "x/y")).unwrap(),
            "a.io/x/y:1.0"
        );
        assert_eq!(
            override_image(image, &image_op("Tag", "replace", "2.0")).unwrap(),
            "a.io/web/app:2.0"
        );
        assert_eq!(
            override_image(image, &image_op("Tag", "remove", "")).unwrap(),
            "a.io/web/app"
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            override_image(image, &image_op("Tag", "replace", &digest)).unwrap(),
            format!("a.io/web/app@{digest}")
        );
        assert_eq!(
            override_image("nginx", &image_op("Registry", "add", "x.io")).unwrap(),
            "x.io/nginx"
        );
        assert!(override_image(image, &image_op("Host", "add", "x")).is_err());
    }

    #[test]
    fn image_overrider_touches_containers_not_init_containers() {
        let mut deployment = json!({"kind": "Deployment", "spec": {"template": {"spec": {
            "initContainers": [{"name": "init", "image": "a.io/init:1"}],
            "containers": [{"name": "a", "image": "a.io/a:1"}, {"name": "b", "image": "b:2"}]
        }}}});
        let overriders = Overriders {
            image_overrider: vec![image_op("Registry", "replace", "mirror.cn")],
            ..Default::default()
        };
        apply_overriders(&mut deployment, &overriders).unwrap();
        let spec = &deployment["spec"]["template"]["spec"];
        assert_eq!(spec["containers"][0]["image"], "mirror.cn/a:1");
        assert_eq!(spec["containers"][1]["image"], "mirror.cn/b:2");
        assert_eq!(spec["initContainers"][0]["image"], "a.io/init:1");
    }

    #[test]
    fn predicate_path_must_exist() {
        let mut pod =
            json!({"kind": "Pod", "spec": {"containers": [{"name": "a", "image": "x:1"}]}});
        let overriders = Overriders {
            image_overrider: vec![ImageOverrider {
                predicate: Some(super::super::types::ImagePredicate {
                    path: "/spec/containers/3/image".into(),
                }),
                ..image_op("Tag", "replace", "2")
            }],
            ..Default::default()
        };
        let error = chain(&apply_overriders(&mut pod, &overriders).unwrap_err());
        assert!(
            error.contains("imageOverrider[0]") && error.contains("/spec/containers/3/image"),
            "{error}"
        );
    }

    #[test]
    fn command_and_args_add_append_and_remove_every_equal_element() {
        let mut deployment = json!({"kind": "Deployment", "spec": {"template": {"spec": {
            "containers": [{"name": "web", "args": ["--a", "--b", "--a"]}, {"name": "other"}]
        }}}});
        let overriders = Overriders {
            args_overrider: vec![
                CommandArgsOverrider {
                    container_name: "web".into(),
                    operator: "remove".into(),
                    value: vec!["--a".into()],
                },
                CommandArgsOverrider {
                    container_name: "web".into(),
                    operator: "add".into(),
                    value: vec!["--region=eu".into()],
                },
            ],
            command_overrider: vec![CommandArgsOverrider {
                container_name: "other".into(),
                operator: "add".into(),
                value: vec!["/bin/run".into()],
            }],
            ..Default::default()
        };
        apply_overriders(&mut deployment, &overriders).unwrap();
        let containers = &deployment["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers[0]["args"], json!(["--b", "--region=eu"]));
        assert_eq!(containers[1]["command"], json!(["/bin/run"]));
        assert!(containers[1].get("args").is_none());
    }

    #[test]
    fn labels_add_replace_remove_like_karmada() {
        let mut object = json!({"kind": "Deployment", "metadata": {"name": "x", "labels": {"for": "for", "bar": "old"}}});
        let op = |operator: &str, pairs: &[(&str, &str)]| LabelAnnotationOverrider {
            operator: operator.into(),
            value: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let overriders = Overriders {
            labels_overrider: vec![
                op("add", &[("env", "dev"), ("app.kubernetes.io/name", "x")]),
                op("remove", &[("for", "for")]),
                op("replace", &[("bar", "test"), ("absent", "no")]),
            ],
            annotations_overrider: vec![
                op("replace", &[("missing", "x")]),
                op("add", &[("a", "b")]),
            ],
            ..Default::default()
        };
        apply_overriders(&mut object, &overriders).unwrap();
        assert_eq!(
            object["metadata"]["labels"],
            json!({"env": "dev", "bar": "test", "app.kubernetes.io/name": "x"})
        );
        assert_eq!(object["metadata"]["annotations"], json!({"a": "b"}));
    }

    #[test]
    fn plaintext_applies_json_patch_and_names_the_failing_path() {
        let mut object = json!({"kind": "ConfigMap", "data": {"a": "1"}});
        let ok = Overriders {
            plaintext: vec![
                PlaintextOverrider {
                    path: "/data/b".into(),
                    operator: "add".into(),
                    value: Some(json!("2")),
                },
                PlaintextOverrider {
                    path: "/data/a".into(),
                    operator: "remove".into(),
                    value: None,
                },
            ],
            ..Default::default()
        };
        apply_overriders(&mut object, &ok).unwrap();
        assert_eq!(object["data"], json!({"b": "2"}));
        let bad = Overriders {
            plaintext: vec![PlaintextOverrider {
                path: "/spec/missing/x".into(),
                operator: "replace".into(),
                value: Some(json!(1)),
            }],
            ..Default::default()
        };
        let error = chain(&apply_overriders(&mut object, &bad).unwrap_err());
        assert!(
            error.starts_with("plaintext[0]: /spec/missing/x"),
            "{error}"
        );
    }
}

#[cfg(test)]
mod field_tests {
    use super::*;
    use crate::error::chain;
    use crate::placement::types::DocumentPatchOperation;

    fn operation(operator: &str, sub_path: &str, value: Option<Value>) -> DocumentPatchOperation {
        DocumentPatchOperation {
            sub_path: sub_path.into(),
            operator: operator.into(),
            value,
        }
    }

    #[test]
    fn field_overrider_patches_json_and_yaml_documents_in_strings() {
        let mut config_map = json!({"data": {
            "app.json": "{\"log\": {\"level\": \"info\"}, \"port\": 80}",
            "app.yaml": "replicas: 1\nzones:\n- a\n",
        }});
        let overriders = Overriders {
            field_overrider: vec![
                FieldOverrider {
                    field_path: "/data/app.json".into(),
                    json: vec![
                        operation("replace", "/log/level", Some(json!("debug"))),
                        operation("add", "/tls", Some(json!(true))),
                        operation("remove", "/port", None),
                    ],
                    yaml: vec![],
                },
                FieldOverrider {
                    field_path: "/data/app.yaml".into(),
                    json: vec![],
                    yaml: vec![
                        operation("add", "/zones/-", Some(json!("b"))),
                        operation("replace", "/replicas", Some(json!(3))),
                    ],
                },
            ],
            ..Default::default()
        };
        apply_overriders(&mut config_map, &overriders).unwrap();
        assert_eq!(
            config_map["data"]["app.json"],
            "{\"log\":{\"level\":\"debug\"},\"tls\":true}"
        );
        let yaml: Value =
            serde_saphyr::from_str(config_map["data"]["app.yaml"].as_str().unwrap()).unwrap();
        assert_eq!(yaml, json!({"replicas": 3, "zones": ["a", "b"]}));

        let mut not_a_string = json!({"spec": {"replicas": 1}});
        let overriders = Overriders {
            field_overrider: vec![FieldOverrider {
                field_path: "/spec/replicas".into(),
                json: vec![operation("remove", "/x", None)],
                yaml: vec![],
            }],
            ..Default::default()
        };
        assert_eq!(
            chain(&apply_overriders(&mut not_a_string, &overriders).unwrap_err()),
            "fieldOverrider[0]: /spec/replicas: is not a string"
        );
    }
}
