#!/usr/bin/env python3
"""Regenerates the committed seed corpus (fuzz/corpus/<target>/) from the repository's own
examples: the kustomize conformance fixtures and examples/fleet-repo, plus a few hand-written
edge cases. Each seed is named by the SHA-1 of its content (as libFuzzer names inputs) and is
at most MAX_BYTES, so the committed corpus stays small. Run from anywhere: fuzz/seeds.py"""

import hashlib
import pathlib
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests/fixtures/kustomize"
FLEET = ROOT / "examples/fleet-repo"
CORPUS = ROOT / "fuzz/corpus"
MAX_BYTES = 8192


def write(target, text, limit=MAX_BYTES):
    data = text.encode()
    if len(data) > limit:
        return
    directory = CORPUS / target
    directory.mkdir(parents=True, exist_ok=True)
    (directory / hashlib.sha1(data).hexdigest()).write_bytes(data)


def documents(path):
    try:
        return [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    except Exception:  # noqa: BLE001 (a date PyYAML cannot build, a tag it does not know)
        return []


def dump(*docs):
    return "---\n".join(yaml.safe_dump(d, sort_keys=False) for d in docs)


def tree(directory):
    """A fixture directory packed as kustomize_build reads it (expected output left out)."""
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != "expected.yaml")
    parts = []
    for path in files:
        relative = path.relative_to(directory).as_posix()
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        if not text.endswith("\n"):
            text += "\n"
        parts.append(f"#== {relative}\n{text}")
    return "".join(parts)


def main():
    for target in ["yaml_load", "kustomize_build", "merge_patch", "overriders", "placement"]:
        for old in (CORPUS / target).glob("*"):
            old.unlink()

    # yaml_load: every YAML file of the example fleet, a sample of fixture files, edge cases.
    for path in sorted(FLEET.rglob("*.yaml")):
        write("yaml_load", path.read_text())
    for directory in sorted(FIXTURES.iterdir())[::6]:
        for path in sorted(directory.glob("*.yaml"))[:1]:
            write("yaml_load", path.read_text())
    for text in [
        "a: &a [1, 2]\nb: *a\nc: {<<: {x: 1}, y: 2}\n",
        "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: x}}\n",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  annotations: {a: 2024-01-01, b: yes, c: 0o17, d: 010}\ndata:\n  k: |\n    text\n",
        "---\n---\n# only a comment\n...\n",
        "x: !!binary aGVsbG8=\ny: !!str 1\nz: ~\n",
    ]:
        write("yaml_load", text)

    # kustomize_build: every fixture small enough, and the example fleet's kustomization.
    for directory in sorted(FIXTURES.iterdir()):
        if directory.is_dir():
            # The larger fixtures repeat what the smaller ones show.
            write("kustomize_build", tree(directory), limit=3072)
    write("kustomize_build", tree(FLEET / "apps/shop"))

    # merge_patch: each fixture's first object with each of its patches (inline or file).
    for directory in sorted(FIXTURES.iterdir()):
        kustomization = directory / "kustomization.yaml"
        if not kustomization.is_file():
            continue
        config = documents(kustomization)
        config = config[0] if config else {}
        objects = [d for p in sorted(directory.glob("*.yaml")) if p.name not in
                   ("kustomization.yaml", "expected.yaml") for d in documents(p) if "kind" in d]
        if not objects:
            continue
        patches = []
        for entry in config.get("patchesStrategicMerge", []) or []:
            if isinstance(entry, str) and (directory / entry).is_file():
                patches += documents(directory / entry)
        for entry in config.get("patches", []) or []:
            if not isinstance(entry, dict):
                continue
            if "patch" in entry:
                try:
                    patches += list(yaml.safe_load_all(entry["patch"]))
                except yaml.YAMLError:
                    pass
            elif "path" in entry and (directory / entry["path"]).is_file():
                patches += list(yaml.safe_load_all((directory / entry["path"]).read_text()))
        for patch in patches[:3]:
            if isinstance(patch, (dict, list)):
                target = next((o for o in objects if isinstance(patch, list) or
                               o.get("kind") == patch.get("kind")), objects[0])
                write("merge_patch", dump(target, patch))

    # overriders: each rule of the example fleet's override policies with the template it
    # selects, and hand-written ones for the overriders the fleet does not use.
    templates = {}
    for path in sorted(FLEET.rglob("*.yaml")):
        for doc in documents(path):
            if doc.get("kind") in ("Deployment", "ConfigMap", "StatefulSet", "Service"):
                templates.setdefault(doc["kind"], []).append(doc)
    deployment = templates["Deployment"][0]
    for path in sorted(FLEET.rglob("*.yaml")):
        for doc in documents(path):
            if doc.get("kind") not in ("OverridePolicy", "ClusterOverridePolicy"):
                continue
            spec = doc.get("spec", {})
            rules = spec.get("overrideRules", []) or []
            if "overriders" in spec:
                rules.append({"overriders": spec["overriders"]})
            for rule in rules:
                write("overriders", dump(deployment, rule.get("overriders", {})))
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                 "data": {"config.yaml": "a:\n  b: 1\n", "config.json": "{\"a\": [1]}"}}
    write("overriders", dump(configmap, {"fieldOverrider": [
        {"fieldPath": "/data/config.yaml", "yaml": [{"subPath": "/a/b", "operator": "replace", "value": 2}]},
        {"fieldPath": "/data/config.json", "json": [{"subPath": "/a/0", "operator": "remove"}]}]}))
    write("overriders", dump(deployment, {
        "plaintext": [{"path": "/spec/replicas", "operator": "replace", "value": 3},
                      {"path": "/metadata/labels/x", "operator": "add", "value": "y"}],
        "labelsOverrider": [{"operator": "add", "value": {"team": "a"}}],
        "annotationsOverrider": [{"operator": "remove", "value": {"note": ""}}],
        "commandOverrider": [{"containerName": "nginx", "operator": "add", "value": ["--v"]}],
        "imageOverrider": [{"component": "Tag", "operator": "replace", "value": "1.2"},
                           {"predicate": {"path": "/spec/template/spec/containers/0/image"},
                            "component": "Repository", "operator": "add", "value": "-x"}]},
        {"image": "registry.io:5000/a/b:tag@sha256:" + "0" * 64}))

    # placement: each app of the example fleet with the fleet (its policies name its
    # clusters), one with the built-in fleet, and one with a capacity file.
    fleet = "".join((FLEET / "fleet" / n).read_text() + "\n---\n"
                    for n in ("fleet.yaml", "attachedclusters.yaml"))
    platform = "".join(p.read_text() + "\n---\n" for p in sorted((FLEET / "platform").glob("*.yaml")))
    for app in sorted((FLEET / "apps").iterdir()):
        if (app / "kustomization.yaml").exists():
            continue
        body = "".join(p.read_text() + "\n---\n" for p in sorted(app.glob("*.yaml")))
        write("placement", fleet + body)
    write("placement", fleet + platform)
    write("placement", """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 7
  template:
    spec:
      containers: [{name: web, image: nginx, resources: {requests: {cpu: 500m, memory: 1Gi}}}]
---
apiVersion: policy.karmada.io/v1alpha1
kind: PropagationPolicy
metadata: {name: web, namespace: default}
spec:
  resourceSelectors: [{apiVersion: apps/v1, kind: Deployment, name: web}]
  placement:
    clusterAffinity: {labelSelector: {matchLabels: {env: prod}}}
    spreadConstraints: [{spreadByField: region, maxGroups: 2, minGroups: 1}]
    replicaScheduling:
      replicaSchedulingType: Divided
      replicaDivisionPreference: Aggregated
---
apiVersion: policy.karmada.io/v1alpha1
kind: ClusterOverridePolicy
metadata: {name: tag}
spec:
  resourceSelectors: [{apiVersion: apps/v1, kind: Deployment}]
  overrideRules:
    - targetCluster: {clusterNames: [member-2]}
      overriders: {imageOverrider: [{component: Tag, operator: replace, value: "2"}]}

#== capacity
clusters:
  member-1: {allocatable: {cpu: "8", memory: 32Gi, pods: "110"}, requested: {cpu: "2"}}
  member-2: {allocatable: {cpu: "4", memory: 16Gi, pods: "110"}}
  member-3: {allocatable: {cpu: "2", memory: 8Gi, pods: "10"}}
""")

    # Regressions: inputs that once crashed a target, kept so every run tries them again.
    write("placement", """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec: x
---
apiVersion: policy.karmada.io/v1alpha1
kind: PropagationPolicy
metadata: {name: web, namespace: default}
spec:
  resourceSelectors: [{apiVersion: apps/v1, kind: Deployment, name: web}]
  placement:
    clusterAffinity: {clusterNames: [member-1, member-2]}
    replicaScheduling: {replicaSchedulingType: Divided, replicaDivisionPreference: Weighted}
""")


if __name__ == "__main__":
    main()
