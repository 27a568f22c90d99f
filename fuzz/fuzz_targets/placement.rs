//! Placement: the input is a YAML stream of objects (a fleet, propagation and override
//! policies, templates), optionally followed by a line `#== capacity` and a capacity file.
//! Without a `Fleet` or `AttachedCluster` of its own, the stream gets a built-in three-cluster
//! fleet, so mutations spend their time on policies and templates. Each input is planned
//! twice: with every cluster up, and with `member-1` unavailable (failover).
#![no_main]

use std::collections::BTreeSet;
use std::path::Path;

use flotilla::placement::{Capacity, PlanInputs, diff, plan_with};
use flotilla::render::load::parse_objects;
use flotilla::render::{Rendered, check_unique};
use libfuzzer_sys::fuzz_target;

const FLEET: &str = "\
apiVersion: fleet.kurator.dev/v1alpha1
kind: Fleet
metadata: {name: fleet, namespace: flotilla-system}
spec:
  clusters:
    - {name: member-1, kind: AttachedCluster, labels: {env: prod, tier: a}, provider: aws, region: eu-1, zones: [eu-1a, eu-1b]}
    - {name: member-2, kind: AttachedCluster, labels: {env: prod, tier: b}, provider: gcp, region: eu-1, zones: [eu-1c]}
    - {name: member-3, kind: AttachedCluster, labels: {env: dev}, provider: aws, region: us-1, zones: [us-1a]}
";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (objects_text, capacity_text) = match text.split_once("\n#== capacity\n") {
        Some((objects, capacity)) => (objects, Some(capacity)),
        None => (text, None),
    };
    let Ok(mut objects) = parse_objects(objects_text, Path::new("fuzz.yaml")) else {
        return;
    };
    if !objects
        .iter()
        .any(|o| matches!(o.kind(), "Fleet" | "AttachedCluster"))
    {
        let Ok(fleet) = parse_objects(FLEET, Path::new("fleet.yaml")) else {
            return;
        };
        objects.extend(fleet);
    }
    // `render` refuses duplicates before placement ever sees them.
    if check_unique(&objects).is_err() {
        return;
    }
    let capacity = match capacity_text.map(|t| Capacity::parse(t, Path::new("capacity.yaml"))) {
        Some(Ok(capacity)) => Some(capacity),
        Some(Err(_)) => return,
        None => None,
    };
    let rendered = Rendered { objects };
    let all_up = BTreeSet::new();
    let first = plan_with(
        &rendered,
        &PlanInputs {
            unavailable: &all_up,
            capacity: capacity.as_ref(),
            previous: None,
            max_placed_objects: flotilla::limits::RenderLimits::default().max_placed_objects,
        },
    );
    let one_down = BTreeSet::from(["member-1".to_string()]);
    let second = plan_with(
        &rendered,
        &PlanInputs {
            unavailable: &one_down,
            capacity: capacity.as_ref(),
            previous: None,
            max_placed_objects: flotilla::limits::RenderLimits::default().max_placed_objects,
        },
    );
    if let (Ok(first), Ok(second)) = (first, second) {
        let _ = diff(&first, &second);
    }
});
