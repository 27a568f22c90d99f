//! Member cluster health: every cluster's `/readyz` is probed on an interval. A cluster turns
//! NotReady after `failure_threshold` failed probes in a row, and Ready again after
//! `success_threshold` good ones, so one lost probe moves nothing and a flapping cluster does not
//! bounce its replicas back and forth. The agent fails Divided replicas over while a cluster is
//! NotReady (see [`crate::placement::plan_with_unavailable`]).

use std::time::Duration;

use tokio::sync::mpsc;

use crate::hub::MemberCredentials;
use crate::placement::types::SecretKeyRef;

/// Probe timing and thresholds.
#[derive(Debug, Clone, Copy)]
pub struct HealthSettings {
    /// Time between probes of one cluster.
    pub interval: Duration,
    /// How long one probe may take.
    pub timeout: Duration,
    /// Failed probes in a row that make a cluster NotReady.
    pub failure_threshold: u32,
    /// Good probes in a row that make a NotReady cluster Ready again.
    pub success_threshold: u32,
}

impl Default for HealthSettings {
    /// 2 s probes, NotReady after 3 failures (about 6 s), Ready after 5 successes (about 10 s).
    fn default() -> Self {
        HealthSettings {
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(2),
            failure_threshold: 3,
            success_threshold: 5,
        }
    }
}

/// Counts probe results into Ready / NotReady; a cluster starts Ready.
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    not_ready: bool,
    failures: u32,
    successes: u32,
}

impl Tracker {
    /// Records one probe; returns the new readiness when it changed.
    pub fn observe(&mut self, ok: bool, settings: &HealthSettings) -> Option<bool> {
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if self.not_ready && self.successes >= settings.success_threshold.max(1) {
                self.not_ready = false;
                return Some(true);
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if !self.not_ready && self.failures >= settings.failure_threshold.max(1) {
                self.not_ready = true;
                return Some(false);
            }
        }
        None
    }

    /// Whether the cluster is Ready.
    pub fn ready(&self) -> bool {
        !self.not_ready
    }
}

/// A cluster's readiness changed.
#[derive(Debug, Clone)]
pub struct HealthChange {
    /// The cluster.
    pub cluster: String,
    /// Ready now, or not.
    pub ready: bool,
    /// Why: the last probe's error, or the successes that restored it.
    pub reason: String,
}

/// Probes one cluster until the task is aborted, reporting every readiness change.
pub async fn probe_cluster(
    cluster: String,
    secret: Option<SecretKeyRef>,
    credentials: MemberCredentials,
    settings: HealthSettings,
    changes: mpsc::Sender<HealthChange>,
) {
    let mut tracker = Tracker::default();
    let mut client: Option<kube::Client> = None;
    let mut ticker = tokio::time::interval(settings.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if client.is_none() {
            match credentials.connect(&cluster, secret.as_ref()).await {
                Ok((member, _)) => client = Some(member.client().clone()),
                Err(error) => {
                    report(&mut tracker, false, &settings, &cluster, error, &changes).await;
                    continue;
                }
            }
        }
        let Some(connected) = &client else { continue };
        let result = probe(connected, settings.timeout).await;
        let ok = result.is_ok();
        // A new connection next time: a restarted apiserver may have new certificates.
        if !ok {
            client = None;
        }
        let reason = match result {
            Ok(()) => format!(
                "/readyz answered ok {} times in a row",
                settings.success_threshold
            ),
            Err(error) => error,
        };
        report(&mut tracker, ok, &settings, &cluster, reason, &changes).await;
    }
}

async fn report(
    tracker: &mut Tracker,
    ok: bool,
    settings: &HealthSettings,
    cluster: &str,
    reason: String,
    changes: &mpsc::Sender<HealthChange>,
) {
    if let Some(ready) = tracker.observe(ok, settings) {
        let _ = changes
            .send(HealthChange {
                cluster: cluster.to_string(),
                ready,
                reason,
            })
            .await;
    }
}

/// One `GET /readyz`, within the timeout.
async fn probe(client: &kube::Client, timeout: Duration) -> Result<(), String> {
    let request = http::Request::get("/readyz")
        .body(Vec::new())
        .map_err(|error| error.to_string())?;
    match tokio::time::timeout(timeout, client.request_text(request)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(format!("/readyz: {error}")),
        Err(_) => Err(format!("/readyz: no answer in {timeout:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_decide_readiness() {
        let settings = HealthSettings {
            failure_threshold: 3,
            success_threshold: 2,
            ..Default::default()
        };
        let mut tracker = Tracker::default();
        assert!(tracker.ready());
        // Two failures, then a success: still Ready, and the count starts again.
        assert_eq!(tracker.observe(false, &settings), None);
        assert_eq!(tracker.observe(false, &settings), None);
        assert_eq!(tracker.observe(true, &settings), None);
        assert_eq!(tracker.observe(false, &settings), None);
        assert_eq!(tracker.observe(false, &settings), None);
        assert_eq!(tracker.observe(false, &settings), Some(false));
        assert!(!tracker.ready());
        assert_eq!(tracker.observe(false, &settings), None, "reported once");
        // One success is not enough; a failure in between starts the count again.
        assert_eq!(tracker.observe(true, &settings), None);
        assert_eq!(tracker.observe(false, &settings), None);
        assert_eq!(tracker.observe(true, &settings), None);
        assert_eq!(tracker.observe(true, &settings), Some(true));
        assert!(tracker.ready());
    }
}
