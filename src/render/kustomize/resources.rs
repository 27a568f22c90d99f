//! Resources during a build: each object with the names it has had ([`Resource`]), and how a
//! kustomization gathers them - its `resources` and `bases` (each base built first), its
//! `components` (run on what it has gathered) - and the checks on entering a kustomization
//! (cycles, nesting depth, the kind its role needs). Also which kinds kustomize takes as
//! cluster-scoped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::file::Kustomization;
use super::{Accumulated, Level, Role, accumulate, vars};
use crate::object::{Object, ObjectRef};
use crate::render::load::{Dialect, Repo};
use crate::render::{RenderError, kustomization_file};

/// An object during a build, with the names it had before (kustomize's "previous ids").
#[derive(Debug, Clone)]
pub(super) struct Resource {
    pub(super) object: Object,
    /// Earlier (name, namespace) pairs, oldest first.
    pub(super) history: Vec<(String, String)>,
    /// The prefix/suffix pairs applied, innermost first; tells apart copies of one base.
    pub(super) affixes: Vec<(String, String)>,
    /// Generated and still to get its content-hash suffix.
    pub(super) needs_hash: bool,
    /// The vars whose objref names this object.
    pub(super) var_names: Vec<String>,
    /// The builtin generator that made it (`ConfigMapGenerator`, ...), for origin annotations.
    pub(super) generator: Option<&'static str>,
}

impl Resource {
    pub(super) fn new(object: Object) -> Self {
        Resource {
            object,
            history: Vec::new(),
            affixes: Vec::new(),
            needs_hash: false,
            var_names: Vec::new(),
            generator: None,
        }
    }

    pub(super) fn remember_identity(&mut self) {
        let current = (
            self.object.name().to_string(),
            self.object.namespace().to_string(),
        );
        if self.history.last() != Some(&current) {
            self.history.push(current);
        }
    }

    pub(super) fn rename(&mut self, name: &str) {
        self.remember_identity();
        self.object.set_name(name);
    }

    pub(super) fn set_namespace(&mut self, namespace: &str) {
        self.remember_identity();
        self.object.set_namespace(namespace);
    }

    /// Every (name, namespace) the object has been known by, current last.
    pub(super) fn identities(&self) -> impl Iterator<Item = (&str, &str)> {
        self.history
            .iter()
            .map(|(n, ns)| (n.as_str(), ns.as_str()))
            .chain(std::iter::once((
                self.object.name(),
                self.object.namespace(),
            )))
    }

    pub(super) fn known_as(&self, name: &str) -> bool {
        self.identities().any(|(n, _)| n == name)
    }

    pub(super) fn known_in_namespace(&self, namespace: &str) -> bool {
        self.identities()
            .any(|(_, ns)| same_namespace(ns, namespace))
    }
}

/// Kustomize treats a missing namespace as `default`.
pub(super) fn same_namespace(a: &str, b: &str) -> bool {
    let norm = |ns: &str| if ns.is_empty() { "default" } else { ns }.to_string();
    norm(a) == norm(b)
}
/// The kustomization file of `dir`, pushed on `stack` (the directories being built). kustomize
/// refuses a directory that is, or contains, one being built ("cycle detected: candidate root
/// contains visited root"), e.g. an overlay under its base naming `../../`; nesting is bounded
/// by `--max-depth`.
pub(super) fn enter_kustomization(
    repo: &Repo,
    dir: &Path,
    stack: &mut Vec<PathBuf>,
) -> Result<PathBuf, RenderError> {
    let Some(file) = kustomization_file(repo, dir)? else {
        return Err(RenderError::Kustomization {
            path: dir.to_path_buf(),
            field: "resources".into(),
            problem: "directory has no kustomization.yaml".into(),
        });
    };
    if let Some(visited) = stack.iter().find(|visited| visited.starts_with(dir)) {
        return Err(RenderError::Kustomization {
            path: file,
            field: "resources".into(),
            problem: format!(
                "cycle: this directory contains {}, which is being built and names it",
                visited.display()
            ),
        });
    }
    let limit = repo.limits().max_depth;
    if stack.len() >= limit {
        return Err(RenderError::Limit {
            path: file,
            what: format!("more than {limit} kustomizations nested (resources, components)"),
            flag: "--max-depth",
        });
    }
    stack.push(dir.to_path_buf());
    Ok(file)
}

/// Refuses a kustomization whose kind does not fit its `role` (a Component built or used as a
/// base, a Kustomization named in `components`), or whose apiVersion is not its kind's.
pub(super) fn check_kind(
    kustomization: &Kustomization,
    role: Role,
    file: &Path,
) -> Result<(), RenderError> {
    let kind = kustomization.kind.as_deref().unwrap_or("Kustomization");
    let expected = match role {
        Role::Kustomization => "Kustomization",
        Role::Component => "Component",
    };
    if kind != expected {
        let problem = match role {
            Role::Kustomization => format!(
                "kind {kind:?}: a Component is named in `components`, not built or used as a base"
            ),
            Role::Component => {
                format!("kind {kind:?}: only a `kind: Component` can be named in `components`")
            }
        };
        return Err(RenderError::Kustomization {
            path: file.to_path_buf(),
            field: "kind".into(),
            problem,
        });
    }
    // kustomize's EnforceFields: each kind has one apiVersion (or none).
    let required = match kind {
        "Component" => "kustomize.config.k8s.io/v1alpha1",
        _ => "kustomize.config.k8s.io/v1beta1",
    };
    if let Some(api_version) = kustomization.api_version.as_deref()
        && !api_version.is_empty()
        && api_version != required
    {
        return Err(RenderError::Kustomization {
            path: file.to_path_buf(),
            field: "apiVersion".into(),
            problem: format!("{api_version:?}: a {kind} must have apiVersion {required}"),
        });
    }
    Ok(())
}

impl Level<'_> {
    /// Adds the kustomization's `resources` and `bases`: a directory is built as a base first
    /// (its `configurations` come along), a file is loaded as kustomize reads it.
    pub(super) fn gather_resources(
        &mut self,
        kustomization: &Kustomization,
        stack: &mut Vec<PathBuf>,
        declared_vars: &mut vars::DeclaredVars,
    ) -> Result<(), RenderError> {
        let (repo, dir, file) = (self.repo, self.dir, self.file);
        for reference in kustomization.resources.iter().chain(&kustomization.bases) {
            let path = repo.resolve(dir, reference, file)?;
            if repo.absolute(&path).is_dir() {
                let base = accumulate(
                    repo,
                    &path,
                    stack,
                    declared_vars,
                    Role::Kustomization,
                    Accumulated::default(),
                )?;
                self.append(base.resources)?;
                self.config.merge(base.config);
            } else {
                // kustomize reads resources with kyaml: YAML 1.2 booleans, apiVersion optional.
                let objects = repo.load_objects_with(&path, Dialect::Kustomize)?;
                self.append(objects.into_iter().map(Resource::new).collect())?;
            }
        }
        Ok(())
    }

    /// Adds `incoming`, refusing an object declared twice.
    pub(super) fn append(&mut self, incoming: Vec<Resource>) -> Result<(), RenderError> {
        let mut known: BTreeMap<ObjectRef, usize> = self
            .resources
            .iter()
            .enumerate()
            .map(|(i, r)| (r.object.object_ref(), i))
            .collect();
        for resource in incoming {
            let id = resource.object.object_ref();
            if let Some(&existing) = known.get(&id) {
                return Err(RenderError::Duplicate {
                    object: id,
                    first: self.resources[existing].object.origin.clone(),
                    second: resource.object.origin.clone(),
                });
            }
            known.insert(id, self.resources.len());
            self.resources.push(resource);
        }
        Ok(())
    }

    /// Runs each component on everything gathered so far, in order.
    pub(super) fn add_components(
        &mut self,
        components: &[String],
        stack: &mut Vec<PathBuf>,
        declared_vars: &mut vars::DeclaredVars,
    ) -> Result<(), RenderError> {
        for reference in components {
            let path = self.repo.resolve(self.dir, reference, self.file)?;
            let so_far = Accumulated {
                resources: std::mem::take(&mut self.resources),
                config: std::mem::take(&mut self.config),
            };
            let with_component = accumulate(
                self.repo,
                &path,
                stack,
                declared_vars,
                Role::Component,
                so_far,
            )?;
            self.resources = with_component.resources;
            self.config = with_component.config;
        }
        Ok(())
    }
}

/// The kinds kustomize takes as cluster-scoped, by apiVersion: kyaml's table from the
/// Kubernetes 1.21 schema (openapi.precomputedIsNamespaceScoped). kustomize has no other source:
/// a kind it does not list is namespaced, whatever the cluster or a CRD in the build says - a
/// ValidatingAdmissionPolicy, a `flowcontrol/v1` FlowSchema, a cluster-scoped CRD's objects all
/// get the `namespace:`.
const KUSTOMIZE_CLUSTER_SCOPED: &[(&str, &str)] = &[
    (
        "admissionregistration.k8s.io/v1",
        "MutatingWebhookConfiguration",
    ),
    (
        "admissionregistration.k8s.io/v1",
        "ValidatingWebhookConfiguration",
    ),
    (
        "admissionregistration.k8s.io/v1beta1",
        "MutatingWebhookConfiguration",
    ),
    (
        "admissionregistration.k8s.io/v1beta1",
        "ValidatingWebhookConfiguration",
    ),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
    ("apiextensions.k8s.io/v1beta1", "CustomResourceDefinition"),
    ("apiregistration.k8s.io/v1", "APIService"),
    ("apiregistration.k8s.io/v1beta1", "APIService"),
    ("certificates.k8s.io/v1", "CertificateSigningRequest"),
    ("certificates.k8s.io/v1beta1", "CertificateSigningRequest"),
    ("flowcontrol.apiserver.k8s.io/v1beta1", "FlowSchema"),
    (
        "flowcontrol.apiserver.k8s.io/v1beta1",
        "PriorityLevelConfiguration",
    ),
    ("networking.k8s.io/v1", "IngressClass"),
    ("networking.k8s.io/v1beta1", "IngressClass"),
    ("node.k8s.io/v1", "RuntimeClass"),
    ("node.k8s.io/v1beta1", "RuntimeClass"),
    ("policy/v1beta1", "PodSecurityPolicy"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
    ("rbac.authorization.k8s.io/v1beta1", "ClusterRole"),
    ("rbac.authorization.k8s.io/v1beta1", "ClusterRoleBinding"),
    ("scheduling.k8s.io/v1", "PriorityClass"),
    ("scheduling.k8s.io/v1beta1", "PriorityClass"),
    ("storage.k8s.io/v1", "CSIDriver"),
    ("storage.k8s.io/v1", "CSINode"),
    ("storage.k8s.io/v1", "StorageClass"),
    ("storage.k8s.io/v1", "VolumeAttachment"),
    ("storage.k8s.io/v1beta1", "CSIDriver"),
    ("storage.k8s.io/v1beta1", "CSINode"),
    ("storage.k8s.io/v1beta1", "StorageClass"),
    ("storage.k8s.io/v1beta1", "VolumeAttachment"),
    ("v1", "ComponentStatus"),
    ("v1", "Namespace"),
    ("v1", "Node"),
    ("v1", "NodeProxyOptions"),
    ("v1", "PersistentVolume"),
];

/// Whether kustomize takes objects of this apiVersion and kind as cluster-scoped.
pub(super) fn kustomize_cluster_scoped(api_version: &str, kind: &str) -> bool {
    KUSTOMIZE_CLUSTER_SCOPED.contains(&(api_version, kind))
}

/// [`kustomize_cluster_scoped`] for a kind named without its apiVersion (a name reference's).
pub(super) fn kustomize_cluster_scoped_kind(kind: &str) -> bool {
    KUSTOMIZE_CLUSTER_SCOPED.iter().any(|(_, k)| *k == kind)
}
#[cfg(test)]
mod tests {
    use crate::render::kustomize::tests::build_tree;

    #[test]
    fn components_and_bases_must_have_the_right_kind() {
        const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n";
        const COMPONENT: &str =
            "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\nnamePrefix: x-\n";
        let error = build_tree(&[
            (
                "kustomization.yaml",
                "resources: [cm.yaml]\ncomponents: [base]\n",
            ),
            ("cm.yaml", CM),
            ("base/kustomization.yaml", "namePrefix: x-\n"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            error.contains(
                "base/kustomization.yaml: kind: kind \"Kustomization\": only a `kind: Component`"
            ),
            "{error}"
        );
        let error = build_tree(&[
            ("kustomization.yaml", "resources: [comp]\n"),
            ("comp/kustomization.yaml", COMPONENT),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("comp/kustomization.yaml: kind: kind \"Component\""),
            "{error}"
        );
        let objects = build_tree(&[
            (
                "kustomization.yaml",
                "resources: [cm.yaml]\ncomponents: [comp]\n",
            ),
            ("cm.yaml", CM),
            ("comp/kustomization.yaml", COMPONENT),
        ])
        .unwrap();
        assert_eq!(objects[0].name(), "x-c");
    }
    #[test]
    fn kustomize_refusals_are_refused() {
        const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n";
        // An apiVersion other than the kind's (kustomize: "apiVersion for Kustomization
        // should be kustomize.config.k8s.io/v1beta1").
        for (kustomization, component) in [
            ("apiVersion: v1\nresources: [cm.yaml]\n", ""),
            (
                "resources: [cm.yaml]\ncomponents: [comp]\n",
                "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Component\n",
            ),
        ] {
            let error = build_tree(&[
                ("kustomization.yaml", kustomization),
                ("cm.yaml", CM),
                ("comp/kustomization.yaml", component),
            ])
            .unwrap_err()
            .to_string();
            assert!(error.contains("apiVersion"), "{error}");
        }
        // An overlay under its base naming the base's directory: kustomize's "cycle detected:
        // candidate root contains visited root".
        let error = build_tree(&[
            ("kustomization.yaml", "resources: [app/overlays/prod]\n"),
            ("app/kustomization.yaml", "resources: [cm.yaml]\n"),
            ("app/cm.yaml", CM),
            (
                "app/overlays/prod/kustomization.yaml",
                "resources: [../..]\n",
            ),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("app/kustomization.yaml: resources: cycle"),
            "{error}"
        );
    }
}
