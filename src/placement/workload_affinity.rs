//! Karmada's `workloadAffinity` (v1.17+, behind its `WorkloadAffinity` gate): hard filters that
//! keep the workloads of one (namespace, `key=value`) group together (affinity) or apart
//! (anti-affinity), decided in the order templates are placed (the repo's).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use super::types::{Placement, WorkloadAffinityTerm};
use super::{Cluster, Target};
use crate::object::Object;

/// A workload group: the template's namespace and `key=value` of its grouping label.
type Group = (String, String);

/// Where the workloads of each group went so far, for affinity and for anti-affinity.
#[derive(Debug, Default)]
pub(super) struct WorkloadGroups {
    affinity: BTreeMap<Group, BTreeSet<String>>,
    anti_affinity: BTreeMap<Group, BTreeSet<String>>,
}

/// The groups one template belongs to under its policy.
pub(super) struct TemplateGroups {
    affinity: Option<Group>,
    anti_affinity: Option<Group>,
}

impl TemplateGroups {
    /// The groups of `template` (landing in `namespace`) by the terms of `placement`; a term
    /// whose label the template lacks puts it in no group.
    pub(super) fn of(placement: &Placement, template: &Object, namespace: &str) -> Self {
        let workload_affinity = placement.workload_affinity.as_ref();
        let group_of = |term: Option<&WorkloadAffinityTerm>| {
            let key = &term?.group_by_label_key;
            let (_, value) = template.labels().find(|(k, _)| k == key)?;
            Some((namespace.to_string(), format!("{key}={value}")))
        };
        TemplateGroups {
            affinity: group_of(workload_affinity.and_then(|w| w.affinity.as_ref())),
            anti_affinity: group_of(workload_affinity.and_then(|w| w.anti_affinity.as_ref())),
        }
    }
}

impl WorkloadGroups {
    /// The clusters a template of `groups` may go to. Hard filters: with its affinity group's
    /// workloads (anywhere, while the group has none yet), never with its anti-affinity
    /// group's.
    pub(super) fn allowed<'a>(
        &self,
        groups: &TemplateGroups,
        clusters: &'a [Cluster],
    ) -> Cow<'a, [Cluster]> {
        if groups.affinity.is_none() && groups.anti_affinity.is_none() {
            return Cow::Borrowed(clusters);
        }
        Cow::Owned(
            clusters
                .iter()
                .filter(|cluster| {
                    let with = |placed: &BTreeMap<Group, BTreeSet<String>>,
                                group: &Option<Group>| {
                        group
                            .as_ref()
                            .and_then(|g| placed.get(g))
                            .map(|clusters| clusters.contains(&cluster.name))
                    };
                    with(&self.affinity, &groups.affinity).unwrap_or(true)
                        && !with(&self.anti_affinity, &groups.anti_affinity).unwrap_or(false)
                })
                .cloned()
                .collect(),
        )
    }

    /// Records where a template of `groups` went.
    pub(super) fn record(&mut self, groups: TemplateGroups, targets: &[Target]) {
        for (placed, group) in [
            (&mut self.affinity, groups.affinity),
            (&mut self.anti_affinity, groups.anti_affinity),
        ] {
            if let Some(group) = group
                && !targets.is_empty()
            {
                placed
                    .entry(group)
                    .or_default()
                    .extend(targets.iter().map(|t| t.cluster.clone()));
            }
        }
    }
}
