//! The pure half of the lease protocol: which shard a cluster hashes to, which live replica
//! should hold each shard, the periods derived from `--lease-duration`, and what a replica does
//! about one shard Lease in a round ([`decide_shard`]). No I/O and no clock of its own: time
//! comes in as `now`, so the rules are tested with paused tokio time. The elector in the parent
//! module reads the Leases, calls these, and writes what they decide.

use std::collections::BTreeSet;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::time::Instant;

/// The shard of a cluster: a stable hash of its name.
pub fn shard_of(cluster: &str, shards: u32) -> u32 {
    let digest = Sha256::digest(cluster.as_bytes());
    let value = u64::from_be_bytes(digest[..8].try_into().unwrap_or_default());
    (value % u64::from(shards.max(1))) as u32
}

/// Rendezvous (highest random weight) hashing: the live replica that should hold `shard`.
pub fn preferred_holder<'a>(shard: u32, replicas: &BTreeSet<&'a str>) -> Option<&'a str> {
    replicas.iter().copied().max_by_key(|replica| {
        let digest = Sha256::digest(format!("{shard}/{replica}").as_bytes());
        u64::from_be_bytes(digest[..8].try_into().unwrap_or_default())
    })
}

/// A Lease's name part from an identity: lowercase DNS characters only.
pub(super) fn dns_part(identity: &str) -> String {
    let cleaned: String = identity
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    cleaned.trim_matches('-').chars().take(40).collect()
}

/// The periods a lease group runs by, all derived from `--lease-duration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How often the Leases are listed (and a replica acts on them).
    pub retry_period: Duration,
    /// The duration written in the Leases, in whole seconds as Leases hold them: the takeover
    /// bound less the two retry periods a taker may lag behind.
    pub span: Duration,
    /// How often a held Lease is renewed.
    pub renew_every: Duration,
    /// A holder stops syncing this long after its last renewal was sent: before any other
    /// replica may take the shard (a full span after it saw the last change).
    pub renew_deadline: Duration,
}

impl LeaseTiming {
    /// The periods for `--lease-duration`.
    pub fn of(duration: Duration) -> LeaseTiming {
        let retry_period = (duration / 15).max(Duration::from_millis(200));
        let span = duration.saturating_sub(retry_period * 2);
        let span = Duration::from_secs(span.as_secs().clamp(1, i32::MAX as u64));
        LeaseTiming {
            retry_period,
            span,
            renew_every: span / 3,
            renew_deadline: span * 2 / 3,
        }
    }
}

/// What a replica does about one shard Lease in a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardAction {
    /// Nothing: the Lease is another live holder's, the shard is another replica's to take,
    /// or this replica's renewal is not due yet.
    Wait,
    /// Create the Lease: no replica ever held the shard.
    Create,
    /// Take the Lease over: it is free, expired, or names this replica from an earlier life.
    Take,
    /// Renew the Lease this replica holds.
    Renew,
    /// Hand the shard over: this replica holds it, but another live replica is preferred.
    Release,
}

/// A shard Lease as a round read it, timed by the reader's own clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardLease<'a> {
    /// The holder it names; `None` when it is free.
    pub holder: Option<&'a str>,
    /// Since when the reader has seen its holder and renewTime unchanged.
    pub unchanged_since: Instant,
    /// Its `leaseDurationSeconds`.
    pub duration: Duration,
}

/// The deciding replica's side of a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaView<'a> {
    /// Its identity.
    pub identity: &'a str,
    /// When its last acquire or renewal of the shard's Lease was sent, while it holds it.
    pub renewed: Option<Instant>,
    /// Whether it is the live replica that should hold the shard (see [`preferred_holder`]).
    pub preferred: bool,
    /// How often a held Lease is renewed.
    pub renew_every: Duration,
}

/// Decides what `replica` does about a shard whose Lease reads `lease` (`None`: there is no
/// such Lease) at `now`. A Lease another replica holds is taken only once it has stayed
/// unchanged for its whole duration by the taker's clock (client-go's rule), so the safety of a
/// takeover never rests on comparing clocks; a Lease naming this replica that it does not hold
/// is left from an earlier life of it and is taken back at once.
pub fn decide_shard(
    lease: Option<&ShardLease>,
    replica: &ReplicaView,
    now: Instant,
) -> ShardAction {
    let holder = lease.and_then(|lease| lease.holder);
    let mine = holder == Some(replica.identity);
    if let (true, Some(renewed)) = (mine, replica.renewed) {
        return if !replica.preferred {
            ShardAction::Release
        } else if now.duration_since(renewed) >= replica.renew_every {
            ShardAction::Renew
        } else {
            ShardAction::Wait
        };
    }
    if !replica.preferred {
        return ShardAction::Wait;
    }
    match lease {
        None => ShardAction::Create,
        Some(ShardLease { holder: None, .. }) => ShardAction::Take,
        Some(lease) if mine || now.duration_since(lease.unchanged_since) >= lease.duration => {
            ShardAction::Take
        }
        Some(_) => ShardAction::Wait,
    }
}

/// Whether a holder must stop syncing a shard: its last renewal was sent `deadline` ago or
/// more (the deadline falls before any other replica may take the shard).
pub fn renewal_lapsed(renewed: Instant, now: Instant, deadline: Duration) -> bool {
    now.duration_since(renewed) >= deadline
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn shards_are_stable_and_spread() {
        assert_eq!(shard_of("cluster-a", 16), shard_of("cluster-a", 16));
        let used: BTreeSet<u32> = (0..200)
            .map(|i| shard_of(&format!("cluster-{i}"), 16))
            .collect();
        assert_eq!(used.len(), 16, "200 clusters use every one of 16 shards");
    }

    #[test]
    fn a_replica_leaving_moves_only_its_own_shards() {
        let three = BTreeSet::from(["a", "b", "c"]);
        let two = BTreeSet::from(["a", "b"]);
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for shard in 0..64 {
            let before = preferred_holder(shard, &three).unwrap();
            *counts.entry(before).or_default() += 1;
            let after = preferred_holder(shard, &two).unwrap();
            if before != "c" {
                assert_eq!(
                    before, after,
                    "shard {shard} moved though its holder stayed"
                );
            }
        }
        // Each of three replicas gets a fair part of 64 shards.
        assert!(counts.values().all(|n| (10..=32).contains(n)), "{counts:?}");
    }

    /// Replica `me`, preferred for the shard, renewing every 4 s.
    fn me(renewed: Option<Instant>) -> ReplicaView<'static> {
        ReplicaView {
            identity: "me",
            renewed,
            preferred: true,
            renew_every: Duration::from_secs(4),
        }
    }

    /// A 13 s Lease naming `holder`, seen unchanged from now on.
    fn lease_from_now(holder: Option<&'static str>) -> ShardLease<'static> {
        ShardLease {
            holder,
            unchanged_since: Instant::now(),
            duration: Duration::from_secs(13),
        }
    }

    /// The decision at this instant.
    fn decide_now(lease: Option<&ShardLease>, replica: &ReplicaView) -> ShardAction {
        decide_shard(lease, replica, Instant::now())
    }

    #[tokio::test(start_paused = true)]
    async fn another_holders_lease_is_taken_only_once_unchanged_for_its_duration() {
        let lease = lease_from_now(Some("other"));
        assert_eq!(decide_now(Some(&lease), &me(None)), ShardAction::Wait);
        tokio::time::advance(Duration::from_millis(12_999)).await;
        assert_eq!(
            decide_now(Some(&lease), &me(None)),
            ShardAction::Wait,
            "not expired a millisecond early"
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(decide_now(Some(&lease), &me(None)), ShardAction::Take);
        // A replica that should not hold the shard leaves even an expired Lease alone.
        let other = ReplicaView {
            preferred: false,
            ..me(None)
        };
        assert_eq!(decide_now(Some(&lease), &other), ShardAction::Wait);
    }

    #[tokio::test(start_paused = true)]
    async fn missing_free_and_left_over_leases_are_taken_at_once() {
        assert_eq!(decide_now(None, &me(None)), ShardAction::Create);
        let free = lease_from_now(None);
        assert_eq!(decide_now(Some(&free), &me(None)), ShardAction::Take);
        // Naming this replica, though it holds nothing: an earlier life of it.
        let left_over = lease_from_now(Some("me"));
        assert_eq!(decide_now(Some(&left_over), &me(None)), ShardAction::Take);
        let not_preferred = ReplicaView {
            preferred: false,
            ..me(None)
        };
        assert_eq!(decide_now(None, &not_preferred), ShardAction::Wait);
        assert_eq!(decide_now(Some(&free), &not_preferred), ShardAction::Wait);
    }

    #[tokio::test(start_paused = true)]
    async fn a_holder_renews_every_period_and_hands_over_to_the_preferred_replica() {
        let lease = lease_from_now(Some("me"));
        let holder = me(Some(Instant::now()));
        assert_eq!(decide_now(Some(&lease), &holder), ShardAction::Wait);
        tokio::time::advance(Duration::from_millis(3_999)).await;
        assert_eq!(decide_now(Some(&lease), &holder), ShardAction::Wait);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(decide_now(Some(&lease), &holder), ShardAction::Renew);
        let outranked = ReplicaView {
            preferred: false,
            ..holder
        };
        assert_eq!(decide_now(Some(&lease), &outranked), ShardAction::Release);
    }

    #[test]
    fn lease_periods_follow_the_lease_duration() {
        let timing = LeaseTiming::of(Duration::from_secs(15));
        assert_eq!(timing.retry_period, Duration::from_secs(1));
        assert_eq!(timing.span, Duration::from_secs(13));
        assert_eq!(timing.renew_every, Duration::from_secs(13) / 3);
        assert_eq!(timing.renew_deadline, Duration::from_secs(26) / 3);
        // Short durations keep a 200 ms list period and a whole-second Lease.
        let short = LeaseTiming::of(Duration::from_secs(2));
        assert_eq!(short.retry_period, Duration::from_millis(200));
        assert_eq!(short.span, Duration::from_secs(1));
    }

    /// The safety and the bound of a takeover, round by round: a holder whose renewals stop
    /// reaching the hub stops syncing before a taker may take its shard, whatever the phase of
    /// the taker's rounds, and the taker has it within `--lease-duration`.
    #[tokio::test(start_paused = true)]
    async fn a_silent_holder_stops_before_its_shard_is_taken_within_the_lease_duration() {
        let duration = Duration::from_secs(15);
        let timing = LeaseTiming::of(duration);
        for phase_ms in [0, 1, 500, 999] {
            // The holder's last renewal is sent and lands at `renewed`; the taker's next list
            // sees it `phase` later and it stays unchanged from then on.
            let renewed = Instant::now();
            let phase = Duration::from_millis(phase_ms);
            let lease = ShardLease {
                holder: Some("holder"),
                unchanged_since: renewed + phase,
                duration: timing.span,
            };
            let taker = ReplicaView {
                identity: "taker",
                renewed: None,
                preferred: true,
                renew_every: timing.renew_every,
            };
            // The holder gives the shard up at its renewal deadline (its rounds end by then).
            let stops = renewed + timing.renew_deadline;
            let deadline = timing.renew_deadline;
            assert!(!renewal_lapsed(
                renewed,
                stops - Duration::from_millis(1),
                deadline
            ));
            assert!(renewal_lapsed(renewed, stops, deadline));
            tokio::time::advance(phase).await;
            // Rounds of the taker, a retry period apart, for twice the duration.
            let mut taken = None;
            for _ in 0..30 {
                let now = Instant::now();
                if decide_shard(Some(&lease), &taker, now) == ShardAction::Take {
                    taken = Some(now);
                    break;
                }
                tokio::time::advance(timing.retry_period).await;
            }
            let Some(taken) = taken else {
                panic!("phase {phase_ms} ms: never taken");
            };
            assert!(
                stops < taken,
                "phase {phase_ms} ms: the holder stops after the takeover"
            );
            assert!(
                taken - renewed <= duration,
                "phase {phase_ms} ms: taken {:?} after the last renewal",
                taken - renewed
            );
        }
    }

    #[test]
    fn identities_become_lease_names() {
        assert_eq!(dns_part("Flotilla_7f9c:pod"), "flotilla-7f9c-pod");
        assert!(dns_part(&"x".repeat(100)).len() <= 40);
    }
}
