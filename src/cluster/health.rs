//! Member cluster health: every cluster's `/readyz` is probed on an interval. A cluster turns
//! NotReady after `failure_threshold` failed probes in a row, and Ready again after
//! `success_threshold` good ones, so one lost probe moves nothing and a flapping cluster does not
//! bounce its replicas back and forth. The agent fails Divided replicas over while a cluster is
//! NotReady (see [`crate::placement::plan_with_unavailable`]).

use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;

use crate::cluster::hub::{ConnectError, MemberCredentials};
use crate::error::chain;
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

/// Counts probe results into Ready / NotReady; a cluster starts Ready. The thresholds are a
/// pure function of the results in order ([`Tracker::observe`]); time enters only through the
/// probe interval.
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

/// Why a probe failed. A failed probe counts towards NotReady whatever the cause; the cause
/// says whether the next probe may go better by itself.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The cluster could not be connected to (its credentials).
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// `/readyz` answered with an error, or the request failed.
    #[error("/readyz")]
    Failed(#[source] kube::Error),
    /// `/readyz` did not answer in time.
    #[error("/readyz: no answer in {timeout:?}")]
    Timeout {
        /// The probe timeout.
        timeout: Duration,
    },
}

impl ProbeError {
    /// Whether a later probe may succeed with nothing changed: a timeout, a connection
    /// failure, a 429 or 5xx answer (an apiserver whose etcd is down answers 500). Credentials
    /// that are refused or unusable wait for a change to them.
    pub fn is_retryable(&self) -> bool {
        match self {
            ProbeError::Connect(error) => error.is_retryable(),
            ProbeError::Failed(kube::Error::Api(status)) => {
                status.code == 429 || status.code >= 500
            }
            ProbeError::Failed(
                kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_),
            ) => true,
            ProbeError::Failed(_) => false,
            ProbeError::Timeout { .. } => true,
        }
    }

    /// A fixed name of what went wrong, for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            ProbeError::Connect(error) => error.kind(),
            ProbeError::Failed(kube::Error::Api(status)) if status.code >= 500 => "not_ready",
            ProbeError::Failed(kube::Error::Api(_)) => "refused",
            ProbeError::Failed(
                kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_),
            ) => "unreachable",
            ProbeError::Failed(_) => "client",
            ProbeError::Timeout { .. } => "timeout",
        }
    }
}

/// Probes one cluster until the task is aborted, reporting every readiness change.
pub async fn probe_cluster(
    cluster: String,
    secret: Option<SecretKeyRef>,
    credentials: MemberCredentials,
    settings: HealthSettings,
    changes: mpsc::Sender<HealthChange>,
) {
    let prober = Prober {
        cluster: cluster.clone(),
        secret,
        credentials,
        timeout: settings.timeout,
        client: None,
    };
    let probes = futures::stream::unfold(prober, Prober::probe_once);
    follow_readiness(&cluster, &settings, &changes, probes).await;
}

/// What one cluster's probes need, carried from probe to probe.
struct Prober {
    cluster: String,
    secret: Option<SecretKeyRef>,
    credentials: MemberCredentials,
    timeout: Duration,
    /// The connection, kept while probes succeed.
    client: Option<kube::Client>,
}

impl Prober {
    /// Connects if need be and probes once.
    async fn probe_once(mut self) -> Option<(Result<(), ProbeError>, Prober)> {
        let connected = match self.client.take() {
            Some(connected) => connected,
            None => match self
                .credentials
                .connect(&self.cluster, self.secret.as_ref())
                .await
            {
                Ok((member, _)) => member.client().clone(),
                Err(error) => return Some((Err(error.into()), self)),
            },
        };
        let result = probe(&connected, self.timeout).await;
        // A new connection next time after a failure: a restarted apiserver may have new
        // certificates.
        self.client = result.is_ok().then_some(connected);
        Some((result, self))
    }
}

/// Takes one result from `probes` every interval, the first at once, counts them into
/// readiness with a [`Tracker`], and reports every change, with the failed probe's error and
/// its causes as the reason. Runs until the task is aborted or the probes end.
async fn follow_readiness<E: std::error::Error>(
    cluster: &str,
    settings: &HealthSettings,
    changes: &mpsc::Sender<HealthChange>,
    probes: impl Stream<Item = Result<(), E>>,
) {
    let mut probes = std::pin::pin!(probes);
    let mut tracker = Tracker::default();
    let mut ticker = tokio::time::interval(settings.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(result) = probes.next().await else {
            return;
        };
        let Some(ready) = tracker.observe(result.is_ok(), settings) else {
            continue;
        };
        let reason = match result {
            Ok(()) => format!(
                "/readyz answered ok {} times in a row",
                settings.success_threshold
            ),
            Err(error) => chain(&error),
        };
        let change = HealthChange {
            cluster: cluster.to_string(),
            ready,
            reason,
        };
        let _ = changes.send(change).await;
    }
}

/// One `GET /readyz`, within the timeout.
async fn probe(client: &kube::Client, timeout: Duration) -> Result<(), ProbeError> {
    let mut request = http::Request::new(Vec::new());
    *request.uri_mut() = http::Uri::from_static("/readyz");
    match tokio::time::timeout(timeout, client.request_text(request)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(ProbeError::Failed(error)),
        Err(_) => Err(ProbeError::Timeout { timeout }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A timeout, an unreachable apiserver or one that answers 5xx (etcd down) may answer the
    /// next probe; refused credentials will not.
    #[test]
    fn probe_errors_say_whether_the_next_probe_may_go_better() {
        let answered = |code: u16| {
            ProbeError::Failed(kube::Error::Api(
                kube::core::Status::failure("etcd failed", "InternalError")
                    .with_code(code)
                    .boxed(),
            ))
        };
        let unreachable = ProbeError::Failed(kube::Error::Service(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        ))));
        let timeout = ProbeError::Timeout {
            timeout: Duration::from_secs(2),
        };
        let cases = [
            (answered(500), true, "not_ready"),
            (answered(429), true, "refused"),
            (answered(401), false, "refused"),
            (unreachable, true, "unreachable"),
            (timeout, true, "timeout"),
        ];
        for (error, retryable, kind) in cases {
            assert_eq!(
                (error.is_retryable(), error.kind()),
                (retryable, kind),
                "{error:?}"
            );
        }
        let shown = chain(&answered(500));
        assert!(
            shown.starts_with("/readyz: ApiError: etcd failed"),
            "{shown}"
        );
    }

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

    /// A probe's error, as a refused connection reads.
    #[derive(Debug, thiserror::Error)]
    #[error("/readyz: connection refused")]
    struct Refused;

    /// With the default 2 s probes, a cluster that stops answering is NotReady at its third
    /// failure (4 s after the first probe), and Ready again at its fifth good probe after it
    /// answers again; each change is reported once, with its reason.
    #[tokio::test(start_paused = true)]
    async fn readiness_changes_after_the_thresholds_in_probe_intervals() {
        let settings = HealthSettings::default();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (changes_tx, mut changes) = mpsc::channel(4);
        let probed = up.clone();
        let start = tokio::time::Instant::now();
        let task = tokio::spawn(async move {
            let probes = futures::stream::repeat_with(|| {
                if probed.load(std::sync::atomic::Ordering::SeqCst) {
                    Ok(())
                } else {
                    Err(Refused)
                }
            });
            follow_readiness("member-a", &settings, &changes_tx, probes).await;
        });

        let down = changes.recv().await.expect("a change is reported");
        assert!(!down.ready);
        assert_eq!(down.cluster, "member-a");
        assert_eq!(down.reason, "/readyz: connection refused");
        assert_eq!(start.elapsed(), Duration::from_secs(4));

        up.store(true, std::sync::atomic::Ordering::SeqCst);
        let back = changes.recv().await.expect("a change is reported");
        assert!(back.ready);
        assert_eq!(back.reason, "/readyz answered ok 5 times in a row");
        // Probes at 6, 8, 10, 12 and 14 s.
        assert_eq!(start.elapsed(), Duration::from_secs(14));

        // Steady: nothing more is reported for a long while.
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(
            changes.try_recv().is_err(),
            "no change while nothing changes"
        );
        task.abort();
    }
}
