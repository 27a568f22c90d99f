//! Karmada's own vectors (cited by Go test name and case), then the estimator, quantities, the
//! capacity file and a plan through `place`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Instant;

use serde_json::json;

use super::division::{Weighted, take_by_weight};
use super::*;
use crate::placement::{Plan, PlanInputs, Previous, plan_with};
use crate::render::Rendered;
use crate::render::load::parse_objects;

type Shares = Vec<(String, u64)>;
/// A list of (cluster, replicas).
type List<'a> = &'a [(&'a str, u64)];

fn shares(list: &[(&str, u64)]) -> Shares {
    list.iter().map(|(c, n)| (c.to_string(), *n)).collect()
}

/// A cluster whose summary allows `pods` pods and nothing else is asked: Karmada's
/// `helper.NewClusterWithResource(name, {pods: N}, empty, empty)`.
fn pods_only(pods: u64) -> ClusterResources {
    ClusterResources {
        allocatable: BTreeMap::from([("pods".to_string(), quantity(&pods.to_string()))]),
        ..Default::default()
    }
}

fn quantity(text: &str) -> Quantity {
    Quantity::parse(text).unwrap()
}

/// Available replicas of pods-only clusters through the estimator, then [`divide`]: the path
/// of Karmada's `assignByDynamicStrategy` with an empty `ReplicaRequirements.ResourceRequest`.
fn assign(
    division: Division,
    replicas: u64,
    clusters: &[(&str, u64)],
    previous: &[(&str, u64)],
) -> Result<Shares, NotEnoughCapacity> {
    let requirements = ReplicaRequirements::default();
    let available: Vec<(&str, u64)> = clusters
        .iter()
        .map(|(name, pods)| {
            (
                *name,
                available_replicas(Some(&pods_only(*pods)), &requirements),
            )
        })
        .collect();
    divide(division, replicas, &available, previous)
}

use Division::{Aggregated, DynamicWeight};

// ----- pkg/scheduler/core/division_algorithm_test.go -----

#[test]
fn karmada_dispenser_take_by_weight() {
    // Test_dispenser_takeByWeight: init result A=1 B=2 C=3, weights A=1 B=2 C=3.
    let cases: [(u64, [u64; 3]); 3] = [
        (6, [2, 4, 6]), // "Scale up 6 replicas"
        (3, [1, 3, 5]), // "Scale up 3 replicas"
        (2, [1, 2, 5]), // "Scale up 2 replicas"
    ];
    for (replicas, want) in cases {
        let mut result: BTreeMap<String, u64> =
            BTreeMap::from([("A".into(), 1), ("B".into(), 2), ("C".into(), 3)]);
        let weights = [("A", 1), ("B", 2), ("C", 3)]
            .into_iter()
            .map(|(name, weight)| Weighted {
                name,
                weight,
                last: 0,
            })
            .collect();
        take_by_weight(replicas, weights, &mut result);
        let got: Vec<u64> = result.values().copied().collect();
        assert_eq!(got, want, "{replicas} replicas");
    }
}

#[test]
fn karmada_dynamic_divide_replicas() {
    // Test_dynamicDivideReplicas: a first schedule of 12 replicas over the available replicas.
    let cases: [(&str, Division, List, List); 5] = [
        (
            "replica 12, dynamic weight 18:12:6",
            DynamicWeight,
            &[("member1", 18), ("member2", 12), ("member3", 6)],
            &[("member1", 6), ("member2", 4), ("member3", 2)],
        ),
        (
            "replica 12, dynamic weight 20:12:6",
            DynamicWeight,
            &[("member1", 20), ("member2", 12), ("member3", 6)],
            &[("member1", 7), ("member2", 4), ("member3", 1)],
        ),
        (
            "replica 12, dynamic weight 6:12:6",
            DynamicWeight,
            &[("member1", 6), ("member2", 12), ("member3", 6)],
            &[("member1", 3), ("member2", 6), ("member3", 3)],
        ),
        (
            "replica 12, aggregated 12:6:6",
            Aggregated,
            &[("member2", 12), ("member1", 6), ("member3", 6)],
            &[("member2", 12)],
        ),
        (
            "replica 12, aggregated 6:6:6",
            Aggregated,
            &[("member1", 6), ("member2", 6), ("member3", 6)],
            &[("member1", 6), ("member2", 6)],
        ),
    ];
    for (name, division, available, want) in cases {
        assert_eq!(
            divide(division, 12, available, &[]).unwrap(),
            shares(want),
            "{name}"
        );
    }
}

// ----- pkg/scheduler/core/assignment_test.go -----

#[test]
fn karmada_dynamic_scale() {
    // Test_dynamicScale: (replicas, candidates' allocatable pods, previous result) -> result.
    type Case<'a> = (&'a str, Division, u64, List<'a>, List<'a>, Option<List<'a>>);
    let three = |n| [("member1", n), ("member2", n), ("member3", n)];
    let (ones, tens, hundreds) = (three(1), three(10), three(100));
    let cases: [Case; 9] = [
        (
            "replica 12 -> 6, dynamic weighted 1:1:1",
            DynamicWeight,
            6,
            &ones,
            &[("member1", 2), ("member2", 4), ("member3", 6)],
            Some(&[("member1", 1), ("member2", 2), ("member3", 3)]),
        ),
        (
            "replica 12 -> 24, dynamic weighted 10:10:10",
            DynamicWeight,
            24,
            &tens,
            &[("member1", 2), ("member2", 4), ("member3", 6)],
            Some(&[("member1", 6), ("member2", 8), ("member3", 10)]),
        ),
        (
            "replica 12 -> 24, dynamic weighted 1:1:1",
            DynamicWeight,
            24,
            &ones,
            &[("member1", 2), ("member2", 4), ("member3", 6)],
            None,
        ),
        (
            "replica 12 -> 6, aggregated 1:1:1",
            Aggregated,
            6,
            &ones,
            &[("member1", 4), ("member2", 8)],
            Some(&[("member2", 6)]),
        ),
        (
            "replica 12 -> 8, aggregated 100:100",
            Aggregated,
            8,
            &hundreds[..2],
            &[("member1", 4), ("member2", 8)],
            Some(&[("member2", 8)]),
        ),
        (
            "replica 12 -> 24, aggregated 4:6:8",
            Aggregated,
            24,
            &[("member1", 4), ("member2", 6), ("member3", 8)],
            &[("member1", 4), ("member2", 8)],
            Some(&[("member1", 6), ("member2", 12), ("member3", 6)]),
        ),
        (
            "replica 12 -> 24, aggregated 6:6:20",
            Aggregated,
            24,
            &[("member1", 6), ("member2", 6), ("member3", 20)],
            &[("member1", 4), ("member2", 8)],
            Some(&[("member1", 10), ("member2", 14)]),
        ),
        (
            "replica 12 -> 24, aggregated 1:1:1",
            Aggregated,
            24,
            &ones,
            &[("member1", 4), ("member2", 8)],
            None,
        ),
        (
            "replica 12 -> 24, aggregated 4:8:12, with cluster2 disappeared and cluster4 appeared",
            Aggregated,
            24,
            &[("member1", 4), ("member3", 8), ("member4", 12)],
            &[("member1", 4), ("member2", 8)],
            Some(&[("member1", 7), ("member3", 6), ("member4", 11)]),
        ),
    ];
    for (name, division, replicas, clusters, previous, want) in cases {
        let got = assign(division, replicas, clusters, previous);
        match want {
            Some(want) => assert_eq!(got.unwrap(), shares(want), "{name}"),
            None => assert!(got.is_err(), "{name}: {got:?}"),
        }
    }
}

#[test]
fn karmada_dynamic_scale_up() {
    // Test_dynamicScaleUp: first schedules of 12, and one whose previous cluster left. Karmada
    // accepts either division of "8:8:10" (its tie is random); the lower name wins here.
    type Case<'a> = (&'a str, Division, List<'a>, List<'a>, Option<List<'a>>);
    let threes = [("member1", 3), ("member2", 3), ("member3", 3)];
    let cases: [Case; 7] = [
        (
            "replica 12, dynamic weight 6:8:10",
            DynamicWeight,
            &[("member1", 6), ("member2", 8), ("member3", 10)],
            &[],
            Some(&[("member1", 3), ("member2", 4), ("member3", 5)]),
        ),
        (
            "replica 12, dynamic weight 8:8:10",
            DynamicWeight,
            &[("member1", 8), ("member2", 8), ("member3", 10)],
            &[],
            Some(&[("member1", 4), ("member2", 3), ("member3", 5)]),
        ),
        (
            "replica 12, dynamic weight 3:3:3",
            DynamicWeight,
            &threes,
            &[],
            None,
        ),
        (
            "replica 12, aggregated 6:8:10",
            Aggregated,
            &[("member1", 6), ("member2", 8), ("member3", 10)],
            &[],
            Some(&[("member2", 5), ("member3", 7)]),
        ),
        (
            "replica 12, aggregated 12:8:10",
            Aggregated,
            &[("member1", 12), ("member2", 8), ("member3", 10)],
            &[],
            Some(&[("member1", 12)]),
        ),
        (
            "replica 12, aggregated 3:3:3",
            Aggregated,
            &threes,
            &[],
            None,
        ),
        (
            "replica 12, dynamic weight 3:3, with cluster3 disappeared and cluster2 appeared",
            DynamicWeight,
            &threes[..2],
            &[("member1", 6), ("member3", 6)],
            Some(&[("member1", 9), ("member2", 3)]),
        ),
    ];
    for (name, division, clusters, previous, want) in cases {
        let got = assign(division, 12, clusters, previous);
        match want {
            Some(want) => assert_eq!(got.unwrap(), shares(want), "{name}"),
            None => assert!(got.is_err(), "{name}: {got:?}"),
        }
    }
}

#[test]
fn fresh_division_counts_previous_replicas_as_room() {
    // Karmada has no unit vectors for `dynamicFreshScale`; these follow its code: each
    // candidate weighs its available replicas plus its previous ones (candidates only), and
    // the division starts from nothing.
    type Case<'a> = (&'a str, Division, List<'a>, List<'a>, Option<List<'a>>);
    let cases: [Case; 4] = [
        (
            "replica 12, fresh, dynamic weight 1+2:1+4:1+6 keeps its proportions",
            DynamicWeight,
            &[("member1", 1), ("member2", 1), ("member3", 1)],
            &[("member1", 2), ("member2", 4), ("member3", 6)],
            Some(&[("member1", 2), ("member2", 4), ("member3", 6)]),
        ),
        (
            "replica 12, fresh, aggregated 4+4:0+8:20 moves to the largest",
            Aggregated,
            &[("member1", 4), ("member2", 0), ("member3", 20)],
            &[("member1", 4), ("member2", 8)],
            Some(&[("member3", 12)]),
        ),
        (
            "replica 12, fresh, dynamic weight 3+6:3, with member3 disappeared",
            DynamicWeight,
            &[("member1", 3), ("member2", 3)],
            &[("member1", 6), ("member3", 6)],
            Some(&[("member1", 9), ("member2", 3)]),
        ),
        (
            "replica 12, fresh, dynamic weight 1+2:1 is too little",
            DynamicWeight,
            &[("member1", 1), ("member2", 1)],
            &[("member1", 2)],
            None,
        ),
    ];
    for (name, division, clusters, previous, want) in cases {
        let requirements = ReplicaRequirements::default();
        let available: Vec<(&str, u64)> = clusters
            .iter()
            .map(|(c, pods)| {
                let resources = pods_only(*pods);
                (*c, available_replicas(Some(&resources), &requirements))
            })
            .collect();
        let got = divide_fresh(division, 12, &available, previous);
        match want {
            Some(want) => assert_eq!(got.unwrap(), shares(want), "{name}"),
            None => {
                let error = got.unwrap_err();
                assert_eq!(error.round, "do fresh scale", "{name}");
                assert!(
                    error.to_string().starts_with(
                        "failed to do fresh scale: clusters' available replicas 4 are not \
                         enough to schedule 12"
                    ),
                    "{name}: {error}"
                );
            }
        }
    }
}

#[test]
fn karmada_overflow_affinities_fill_tiers_in_order_and_empty_them_in_reverse() {
    // Karmada's e2e "[OverflowAffinities] scale-up and scale-down with overflow affinities"
    // (test/e2e/suites/base/clusteraffinities_test.go): Aggregated, a primary and a secondary
    // tier of one cluster each, each able to hold 2 replicas (its available replicas drop as
    // its own replicas use the room).
    let tiers = |primary: u64, secondary: u64| {
        vec![vec![("primary", primary)], vec![("secondary", secondary)]]
    };
    let steady = |replicas, tiers: &[Vec<(&str, u64)>], previous: List| {
        divide_in_tiers(Aggregated, Assignment::Steady, replicas, tiers, previous)
    };
    // "replicas are only propagated to the primary group if it has sufficient resources"
    let first = steady(2, &tiers(2, 2), &[]).unwrap();
    assert_eq!(first, shares(&[("primary", 2)]));
    // "scale up: replicas overflow to the secondary group": 4 fill both to their cap.
    let up = steady(4, &tiers(0, 2), &[("primary", 2)]).unwrap();
    assert_eq!(up, shares(&[("primary", 2), ("secondary", 2)]));
    // "schedule fails due to insufficient resources in primary group and overflow groups"
    let error = steady(5, &tiers(0, 0), &[("primary", 2), ("secondary", 2)]).unwrap_err();
    assert_eq!(
        (error.round, error.available, error.needed),
        ("scale up", 0, 1)
    );
    // "scale down: replicas are reduced first from overflow affinity groups"
    let down = steady(2, &tiers(0, 0), &[("primary", 2), ("secondary", 2)]).unwrap();
    assert_eq!(down, shares(&[("primary", 2)]));

    // Beyond Karmada's vectors (from its design: each tier holds what it can before the next
    // gets any; within a tier the usual division): dynamic weight over two tiers of two.
    let wide = [vec![("a", 3), ("b", 1)], vec![("c", 10), ("d", 10)]];
    let got = divide_in_tiers(DynamicWeight, Assignment::Steady, 8, &wide, &[]).unwrap();
    assert_eq!(got, shares(&[("a", 3), ("b", 1), ("c", 2), ("d", 2)]));
    // Scale down 8 -> 5 leaves the overflow tier first: c and d give 3 by their shares 2:2.
    let prev = [("a", 3), ("b", 1), ("c", 2), ("d", 2)];
    let got = divide_in_tiers(DynamicWeight, Assignment::Steady, 5, &wide, &prev).unwrap();
    assert_eq!(got, shares(&[("a", 3), ("b", 1), ("c", 1)]));
    // Fresh: the first tier's room counts its own replicas (3+3, 1+1): 8 fit there.
    let got = divide_in_tiers(DynamicWeight, Assignment::Fresh, 8, &wide, &prev).unwrap();
    assert_eq!(got, shares(&[("a", 6), ("b", 2)]));
    // One tier is the plain division.
    let one = [vec![("a", 6), ("b", 8), ("c", 10)]];
    let got = divide_in_tiers(DynamicWeight, Assignment::Steady, 12, &one, &[]).unwrap();
    assert_eq!(got, divide(DynamicWeight, 12, &one[0], &[]).unwrap());
}

#[test]
fn not_enough_capacity_names_what_is_available() {
    let error = assign(Aggregated, 12, &[("member1", 3), ("member2", 3)], &[]).unwrap_err();
    assert_eq!(
        error.to_string(),
        "failed to scale up: clusters' available replicas 6 are not enough to schedule 12 \
         (available: member1=3 member2=3)"
    );
}

#[test]
fn equal_previous_count_keeps_the_previous_division() {
    let got = divide(
        DynamicWeight,
        5,
        &[("a", 0), ("b", 0)],
        &[("a", 2), ("b", 3)],
    )
    .unwrap();
    assert_eq!(got, shares(&[("a", 2), ("b", 3)]));
}

#[test]
fn billions_of_replicas_divide_at_once() {
    let max = MAX_REPLICAS;
    let start = Instant::now();
    let weighted = divide(DynamicWeight, max, &[("a", max), ("b", max), ("c", 7)], &[]).unwrap();
    assert_eq!(weighted.iter().map(|(_, n)| n).sum::<u64>(), max);
    // floor(max * max / (2 max + 7)) = max / 2 - 2 each for a and b, 3 for c; the 2 left over
    // go to the heaviest, a then b.
    assert_eq!(
        weighted,
        shares(&[("a", max / 2 - 1), ("b", max / 2 - 1), ("c", 3)])
    );
    let aggregated = divide(Aggregated, max, &[("a", max - 1), ("b", max)], &[]).unwrap();
    assert_eq!(aggregated, shares(&[("b", max)]));
    let up = divide(
        DynamicWeight,
        max,
        &[("a", max), ("b", max)],
        &[("a", 1 << 30)],
    )
    .unwrap();
    assert_eq!(up.iter().map(|(_, n)| n).sum::<u64>(), max);
    assert!(start.elapsed().as_millis() < 50, "{:?}", start.elapsed());
}

// ----- quantities -----

#[test]
fn quantities_parse_exactly() {
    assert_eq!(quantity("500m").milli_value(), 500);
    assert_eq!(quantity("500m").value(), 1);
    assert_eq!(quantity("2").milli_value(), 2000);
    assert_eq!(quantity("128Mi").value(), 128 * 1024 * 1024);
    assert_eq!(quantity("1G").value(), 1_000_000_000);
    assert_eq!(quantity("1e3").value(), 1000);
    assert_eq!(quantity("1E3").value(), 1000);
    assert_eq!(quantity("1E").value(), 1_000_000_000_000_000_000);
    assert_eq!(quantity("1.5Gi").value(), 3 << 29);
    assert_eq!(quantity("0.1").milli_value(), 100);
    assert_eq!(quantity(".5").milli_value(), 500);
    assert_eq!(quantity("1e-3").milli_value(), 1);
    assert_eq!(quantity("100n").milli_value(), 1);
    assert_eq!(quantity("+4k").value(), 4000);
    assert_eq!(quantity("-1").value(), -1);
    assert_eq!(quantity("8Ei").value(), 8 << 60);
    for bad in [
        "",
        "abc",
        "1Q",
        "1.2.3",
        "Mi",
        "1e",
        "1e99",
        "1 Gi",
        "99999999999999999999Ei",
    ] {
        assert!(Quantity::parse(bad).is_err(), "{bad:?}");
    }
}

// ----- the estimator -----

fn member(allocatable: &[(&str, &str)], requested: &[(&str, &str)]) -> ClusterResources {
    let list = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), quantity(v)))
            .collect()
    };
    ClusterResources {
        allocatable: list(allocatable),
        requested: list(requested),
        allocating: BTreeMap::new(),
    }
}

fn workload(pod: serde_json::Value) -> ReplicaRequirements {
    ReplicaRequirements::from_template(&json!({"spec": {"template": {"spec": pod}}})).unwrap()
}

fn member1() -> ClusterResources {
    member(
        &[("cpu", "32"), ("memory", "128Gi"), ("pods", "110")],
        &[("cpu", "4"), ("memory", "16Gi"), ("pods", "20")],
    )
}

#[test]
fn karmada_general_estimator() {
    // pkg/estimator/client/general_test.go, TestMaxAvailableReplicasGeneral.
    let web = ReplicaRequirements {
        requests: BTreeMap::from([("cpu".into(), 500), ("memory".into(), 1 << 30)]),
    };
    let none = ReplicaRequirements::default();
    assert_eq!(available_replicas(None, &web), 0, "nil resource summary");
    let full = member(&[("pods", "10")], &[("pods", "10")]);
    assert_eq!(available_replicas(Some(&full), &none), 0, "no allowed pods");
    let ten = member(&[("pods", "10")], &[]);
    assert_eq!(
        available_replicas(Some(&ten), &none),
        10,
        "nil replica requirements"
    );
    let basic = member(
        &[("pods", "100"), ("cpu", "4"), ("memory", "8Gi")],
        &[("pods", "20"), ("cpu", "1"), ("memory", "2Gi")],
    );
    assert_eq!(
        available_replicas(Some(&basic), &web),
        6,
        "basic resource estimation"
    );
    // TestGetAllowedPodNumber: allocatable - allocated - allocating pods, never below 0.
    let pods = |allocatable: &str, allocated: &str, allocating: &str| {
        let mut cluster = member(&[("pods", allocatable)], &[("pods", allocated)]);
        cluster
            .allocating
            .insert("pods".into(), quantity(allocating));
        available_replicas(Some(&cluster), &none)
    };
    assert_eq!(pods("100", "40", "10"), 50, "normal case");
    assert_eq!(pods("0", "10", "0"), 0, "no allocatable pods");
    assert_eq!(pods("100", "90", "20"), 0, "over allocation");
}

#[test]
fn estimator_divides_free_resources_by_requests() {
    let web = workload(json!({"containers": [
        {"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}},
    ]}));
    // cpu 28000m / 500m = 56; memory 112Gi / 1Gi = 112; pods 90.
    assert_eq!(available_replicas(Some(&member1()), &web), 56);
    let big = workload(json!({"containers": [
        {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "4Gi"}}},
        {"name": "b", "resources": {"requests": {"memory": "4Gi"}}},
    ]}));
    assert_eq!(available_replicas(Some(&member1()), &big), 14);
}

#[test]
fn estimator_without_requests_counts_pod_slots() {
    let bare = workload(json!({"containers": [{"name": "a", "image": "nginx"}]}));
    assert!(bare.requests.is_empty());
    assert_eq!(available_replicas(Some(&member1()), &bare), 90);
    // A request of 0 is skipped, as Karmada skips it.
    let zero =
        workload(json!({"containers": [{"name": "a", "resources": {"requests": {"cpu": "0"}}}]}));
    assert_eq!(available_replicas(Some(&member1()), &zero), 90);
}

#[test]
fn estimator_counts_gpus_and_limits_stand_in_for_requests() {
    let train = workload(json!({"containers": [
        {"name": "a", "resources": {"limits": {"nvidia.com/gpu": 2}, "requests": {"cpu": "1"}}},
    ]}));
    assert_eq!(train.requests.get("nvidia.com/gpu"), Some(&2));
    let gpus = member(
        &[("cpu", "64"), ("nvidia.com/gpu", "8"), ("pods", "110")],
        &[("nvidia.com/gpu", "3")],
    );
    assert_eq!(available_replicas(Some(&gpus), &train), 2);
    // A cluster without the resource takes none.
    assert_eq!(available_replicas(Some(&member1()), &train), 0);
}

#[test]
fn estimator_gives_nothing_when_insufficient_or_unknown() {
    let web =
        workload(json!({"containers": [{"name": "a", "resources": {"requests": {"cpu": "2"}}}]}));
    let full = member(&[("cpu", "4"), ("pods", "10")], &[("cpu", "3500m")]);
    assert_eq!(available_replicas(Some(&full), &web), 0);
    let over = member(&[("cpu", "4"), ("pods", "10")], &[("cpu", "5")]);
    assert_eq!(available_replicas(Some(&over), &web), 0);
    let no_pods = member(&[("cpu", "4"), ("pods", "10")], &[("pods", "10")]);
    assert_eq!(available_replicas(Some(&no_pods), &web), 0);
    assert_eq!(available_replicas(None, &web), 0);
}

#[test]
fn effective_requests_follow_karmada_resource_rules() {
    // App containers add up (each rounded up first), init containers raise, overhead adds.
    let requirements = workload(json!({
        "containers": [
            {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "1.5"}}},
            {"name": "b", "resources": {"requests": {"cpu": "200m", "memory": "1.5"}}},
        ],
        "initContainers": [
            {"name": "i", "resources": {"requests": {"cpu": "1", "memory": "1"}}},
        ],
        "overhead": {"cpu": "50m"},
    }));
    assert_eq!(requirements.requests["cpu"], 1050);
    assert_eq!(requirements.requests["memory"], 4);
    // Names Karmada's Resource does not keep are dropped.
    let odd = workload(
        json!({"containers": [{"name": "a", "resources": {"requests": {"widgets": "3"}}}]}),
    );
    assert!(odd.requests.is_empty());
    let bad = ReplicaRequirements::from_template(&json!({"spec": {"template": {"spec": {
        "containers": [{"name": "a", "resources": {"requests": {"cpu": "lots"}}}]
    }}}}))
    .unwrap_err();
    assert!(
        bad.to_string()
            .contains("spec.template.spec.containers[0].resources.requests.cpu"),
        "{bad}"
    );
}

// ----- the capacity file -----

fn parse(text: &str) -> Result<Capacity, CapacityError> {
    Capacity::parse(text, Path::new("capacity.yaml"))
}

#[test]
fn capacity_file_reads_strings_and_numbers() {
    let capacity = parse(
        "clusters:\n  member1:\n    allocatable: {cpu: \"32\", memory: 128Gi, pods: 110}\n    requested:   {cpu: 4,  memory: 16Gi,  pods: \"20\"}\n  member2:\n    allocatable: {pods: 10}\n",
    )
    .unwrap();
    assert_eq!(capacity.clusters["member1"], member1());
    assert_eq!(capacity.clusters["member2"], pods_only(10));
}

#[test]
fn capacity_file_errors_name_file_cluster_and_field() {
    let cases = [
        (
            "clusters: {}\nnodes: 3\n",
            "capacity.yaml: nodes: unknown field",
        ),
        ("{}\n", "capacity.yaml: clusters: missing"),
        ("clusters: [a]\n", "capacity.yaml: clusters: must map"),
        (
            "clusters:\n  m1: {allocatable: {pods: 1}, free: {}}\n",
            "capacity.yaml: cluster m1: free: unknown field",
        ),
        (
            "clusters:\n  m1: {requested: {pods: 1}}\n",
            "capacity.yaml: cluster m1: allocatable: missing",
        ),
        (
            "clusters:\n  m1: {allocatable: {cpu: 2}}\n",
            "capacity.yaml: cluster m1: allocatable.pods: missing",
        ),
        (
            "clusters:\n  m1: {allocatable: {pods: 1, memory: 12Gx}}\n",
            "capacity.yaml: cluster m1: allocatable.memory: \"12Gx\" is not a Kubernetes quantity",
        ),
        (
            "clusters:\n  m1: {allocatable: {pods: 1}, requested: {cpu: \"-1\"}}\n",
            "capacity.yaml: cluster m1: requested.cpu: \"-1\" is negative",
        ),
        (
            "clusters:\n  m1: {allocatable: {pods: [1]}}\n",
            "capacity.yaml: cluster m1: allocatable.pods: [1] is not a quantity",
        ),
        ("clusters: {m1: [\n", "capacity.yaml: not YAML"),
    ];
    for (text, want) in cases {
        let error = parse(text).unwrap_err().to_string();
        assert!(error.starts_with(want), "{text:?}: {error}");
    }
    let missing = Capacity::load(Path::new("/nonexistent/capacity.yaml")).unwrap_err();
    assert!(
        missing
            .to_string()
            .starts_with("/nonexistent/capacity.yaml: "),
        "{missing}"
    );
}

// ----- through the plan -----

const FLEET: &str = r#"
apiVersion: fleet.kurator.dev/v1alpha1
kind: Fleet
metadata: {name: fleet, namespace: flotilla-system}
spec:
  clusters: [{name: member1}, {name: member2}, {name: member3}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 12
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          image: nginx
          resources: {requests: {cpu: "1", memory: 1Gi}}
---
apiVersion: policy.karmada.io/v1alpha1
kind: PropagationPolicy
metadata: {name: web, namespace: shop}
spec:
  resourceSelectors: [{apiVersion: apps/v1, kind: Deployment}]
  placement:
    replicaScheduling:
"#;

const CAPACITY: &str = "clusters:
  member1: {allocatable: {cpu: \"6\", memory: 64Gi, pods: 110}}
  member2: {allocatable: {cpu: \"8\", memory: 64Gi, pods: 110}}
  member3: {allocatable: {cpu: \"10\", memory: 64Gi, pods: 110}}
";

fn plan_of(scheduling: &str, capacity: Option<&Capacity>) -> Plan {
    plan_of_fleet(FLEET, scheduling, capacity)
}

fn plan_of_fleet(fleet: &str, scheduling: &str, capacity: Option<&Capacity>) -> Plan {
    let text = format!("{fleet}      {scheduling}\n");
    let objects = parse_objects(&text, Path::new("fleet.yaml")).unwrap();
    let inputs = PlanInputs {
        unavailable: &BTreeSet::new(),
        capacity,
        previous: None,
        max_placed_objects: 1_000_000,
    };
    plan_with(&Rendered { objects }, &inputs).unwrap()
}

fn replicas(plan: &Plan) -> Vec<(String, Option<u64>)> {
    plan.resources[0]
        .targets
        .iter()
        .map(|t| (t.cluster.clone(), t.replicas))
        .collect()
}

#[test]
fn plan_divides_by_capacity_when_given() {
    let capacity = parse(CAPACITY).unwrap();
    let dynamic =
        "{replicaSchedulingType: Divided, weightPreference: {dynamicWeight: AvailableReplicas}}";
    let plan = plan_of(dynamic, Some(&capacity));
    assert!(plan.errors.is_empty(), "{:?}", plan.errors);
    let want = |list: &[(&str, u64)]| -> Vec<(String, Option<u64>)> {
        list.iter()
            .map(|(c, n)| (c.to_string(), Some(*n)))
            .collect()
    };
    // Karmada's "replica 12, dynamic weight 6:8:10", with cpu as the limit.
    assert_eq!(
        replicas(&plan),
        want(&[("member1", 3), ("member2", 4), ("member3", 5)])
    );
    let copy = &plan.desired["member3"]
        .iter()
        .find(|o| o.kind() == "Deployment")
        .unwrap();
    assert_eq!(copy.value["spec"]["replicas"], 5);
    let aggregated = "{replicaSchedulingType: Divided, replicaDivisionPreference: Aggregated}";
    let plan = plan_of(aggregated, Some(&capacity));
    assert_eq!(replicas(&plan), want(&[("member2", 5), ("member3", 7)]));
}

#[test]
fn plan_without_capacity_or_with_too_little_fails_the_resource() {
    let aggregated = "{replicaSchedulingType: Divided, replicaDivisionPreference: Aggregated}";
    let plan = plan_of(aggregated, None);
    assert!(
        plan.errors[0].problem.contains("--capacity FILE"),
        "{}",
        plan.errors[0]
    );
    let small =
        parse("clusters:\n  member1: {allocatable: {cpu: \"2\", memory: 8Gi, pods: 110}}\n")
            .unwrap();
    let plan = plan_of(aggregated, Some(&small));
    assert!(plan.resources.is_empty());
    assert!(
        plan.errors[0]
            .problem
            .contains("available replicas 2 are not enough to schedule 12"),
        "{}",
        plan.errors[0]
    );
    let missing: Vec<&str> = plan
        .warnings
        .iter()
        .filter(|w| w.kind == "no_capacity")
        .map(|w| w.message.as_str())
        .collect();
    assert_eq!(missing.len(), 2, "{missing:?}");
    // An unknown dynamicWeight is refused with the policy, as Karmada's CRD validation does.
    let unknown = "{replicaSchedulingType: Divided, weightPreference: {dynamicWeight: Magic}}";
    let text = format!("{FLEET}      {unknown}\n");
    let objects = parse_objects(&text, Path::new("fleet.yaml")).unwrap();
    let inputs = PlanInputs {
        unavailable: &BTreeSet::new(),
        capacity: Some(&small),
        previous: None,
        max_placed_objects: 1_000_000,
    };
    let error = plan_with(&Rendered { objects }, &inputs)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("dynamicWeight: \"Magic\" is not one of AvailableReplicas"),
        "{error}"
    );
}

#[test]
fn zero_replicas_go_everywhere_without_capacity() {
    // Karmada's AssignReplicas: no replicas, every candidate, no estimator asked.
    let fleet = FLEET.replace("replicas: 12", "replicas: 0");
    let aggregated = "{replicaSchedulingType: Divided, replicaDivisionPreference: Aggregated}";
    let plan = plan_of_fleet(&fleet, aggregated, None);
    assert!(plan.errors.is_empty(), "{:?}", plan.errors);
    let zero = |c: &str| (c.to_string(), Some(0));
    assert_eq!(
        replicas(&plan),
        [zero("member1"), zero("member2"), zero("member3")]
    );
}

/// [`plan_of`] for `count` replicas, from `previous`.
fn replan(
    count: u64,
    scheduling: &str,
    capacity: &Capacity,
    previous: Option<Previous>,
) -> Vec<(String, Option<u64>)> {
    let fleet = FLEET.replace("replicas: 12", &format!("replicas: {count}"));
    let text = format!("{fleet}      {scheduling}\n");
    let objects = parse_objects(&text, Path::new("fleet.yaml")).unwrap();
    let inputs = PlanInputs {
        unavailable: &BTreeSet::new(),
        capacity: Some(capacity),
        previous,
        max_placed_objects: 1_000_000,
    };
    let plan = plan_with(&Rendered { objects }, &inputs).unwrap();
    assert!(plan.errors.is_empty(), "{:?}", plan.errors);
    replicas(&plan)
}

#[test]
fn a_plan_divides_from_the_previous_division() {
    let dynamic =
        "{replicaSchedulingType: Divided, weightPreference: {dynamicWeight: AvailableReplicas}}";
    let capacity = parse(CAPACITY).unwrap();
    let first = plan_of(dynamic, Some(&capacity));
    let divisions = first.divisions();
    let web = &first.resources[0].resource;
    assert_eq!(
        divisions[web],
        shares(&[("member1", 3), ("member2", 4), ("member3", 5)])
    );
    let want = |list: &[(&str, u64)]| -> Vec<(String, Option<u64>)> {
        list.iter()
            .map(|(c, n)| (c.to_string(), Some(*n)))
            .collect()
    };
    let grown = parse(&CAPACITY.replace("cpu: \"6\"", "cpu: \"60\"")).unwrap();
    let from = |assignment| {
        Some(Previous {
            divisions: &divisions,
            assignment,
        })
    };
    let (steady, fresh) = (from(Assignment::Steady), from(Assignment::Fresh));
    type Case<'a> = (&'a str, u64, &'a Capacity, Option<Previous<'a>>, List<'a>);
    let cases: [Case; 5] = [
        (
            "scale up 12 -> 15: the 12 stay, the 3 new go by available replicas 6:8:10",
            15,
            &capacity,
            steady,
            &[("member1", 3), ("member2", 5), ("member3", 7)],
        ),
        (
            "scale down 12 -> 6: by the previous division 3:4:5, capacity not asked",
            6,
            &capacity,
            steady,
            &[("member1", 1), ("member2", 2), ("member3", 3)],
        ),
        (
            "member1's nodes grow tenfold: the same count stays where it is",
            12,
            &grown,
            steady,
            &[("member1", 3), ("member2", 4), ("member3", 5)],
        ),
        (
            "unless divided afresh: weights 60+3 : 8+4 : 10+5",
            12,
            &grown,
            fresh,
            &[("member1", 9), ("member2", 1), ("member3", 2)],
        ),
        (
            "without a previous division (offline), a first schedule: 60:8:10",
            12,
            &grown,
            None,
            &[("member1", 10), ("member2", 1), ("member3", 1)],
        ),
    ];
    for (name, count, capacity, previous, list) in cases {
        assert_eq!(
            replan(count, dynamic, capacity, previous),
            want(list),
            "{name}"
        );
    }
}

#[test]
fn a_plan_overflows_from_a_term_to_its_overflow_affinities() {
    let fleet = FLEET.replace(
        "  placement:\n",
        "  placement:
    clusterAffinities:
      - affinityName: idc
        clusterNames: [member1]
        overflowAffinities:
          - {affinityName: cloud, clusterNames: [member2, member3, member1]}
",
    );
    let dynamic =
        "{replicaSchedulingType: Divided, weightPreference: {dynamicWeight: AvailableReplicas}}";
    let capacity = parse(CAPACITY).unwrap();
    let plan = plan_of_fleet(&fleet, dynamic, Some(&capacity));
    assert!(plan.errors.is_empty(), "{:?}", plan.errors);
    assert!(
        plan.warnings.iter().all(|w| w.kind != "field_not_applied"),
        "{:?}",
        plan.warnings
    );
    assert_eq!(plan.resources[0].affinity_group.as_deref(), Some("idc"));
    // member1 (the idc tier, listed again in the cloud tier but counted once) holds 6 of the
    // 12; the other 6 overflow to the cloud tier by its available replicas 8:10.
    let want: Vec<(String, Option<u64>)> = [("member1", 6), ("member2", 2), ("member3", 4)]
        .iter()
        .map(|(c, n)| (c.to_string(), Some(*n)))
        .collect();
    assert_eq!(replicas(&plan), want);
}

#[test]
fn a_term_whose_own_clusters_are_gone_overflows_entirely() {
    // Karmada's filter passes clusters of any tier: a term selecting none of its own still
    // stands, and its overflow tier takes everything.
    let fleet = FLEET.replace(
        "  placement:\n",
        "  placement:
    clusterAffinities:
      - affinityName: idc
        clusterNames: [member9]
        overflowAffinities: [{affinityName: cloud, clusterNames: [member2, member3]}]
",
    );
    let aggregated = "{replicaSchedulingType: Divided, replicaDivisionPreference: Aggregated}";
    let capacity = parse(CAPACITY).unwrap();
    let plan = plan_of_fleet(&fleet, aggregated, Some(&capacity));
    assert!(plan.errors.is_empty(), "{:?}", plan.errors);
    assert_eq!(plan.resources[0].affinity_group.as_deref(), Some("idc"));
    // Karmada's "replica 12, aggregated 6:8:10" without member1: 8:10 gives 5:7.
    let want: Vec<(String, Option<u64>)> = [("member2", 5), ("member3", 7)]
        .iter()
        .map(|(c, n)| (c.to_string(), Some(*n)))
        .collect();
    assert_eq!(replicas(&plan), want);
}
