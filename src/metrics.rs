//! Metrics: one Prometheus registry for the agent. Labels are bounded (cluster names, results,
//! webhook providers); a commit hash is never a label.

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// The agent's metrics.
pub struct Metrics {
    registry: Registry,
    /// Syncs by cluster and result (`synced`, `degraded`, `failed`).
    pub syncs: IntCounterVec,
    /// Sync duration per cluster.
    pub sync_duration: HistogramVec,
    /// From the moment a commit was first seen to the moment it was applied, per cluster.
    pub commit_to_applied: HistogramVec,
    /// Objects Flotilla manages per cluster.
    pub objects_managed: IntGaugeVec,
    /// Git fetches by result (`ok`, `error`).
    pub git_fetches: IntCounterVec,
    /// Git fetch duration.
    pub git_fetch_duration: HistogramVec,
    /// Webhook requests by provider and result.
    pub webhook_requests: IntCounterVec,
    /// 1 when the cluster answered in its last sync, else 0.
    pub cluster_reachable: IntGaugeVec,
    /// `flotilla_cluster_ready{cluster}`: 1 Ready, 0 NotReady, from the `/readyz` probes.
    pub cluster_ready: IntGaugeVec,
    /// `flotilla_workloads{cluster,state}`: managed workloads per health state.
    pub workloads: IntGaugeVec,
    /// `flotilla_shards_held`: the shard Leases this replica holds.
    pub shards_held: prometheus::IntGauge,
    /// Unix time of the last successful sync per cluster.
    pub last_successful_sync: GaugeVec,
    /// Commits that failed to load, render or place (nothing was applied).
    pub plan_failures: IntCounterVec,
    /// Drift seen per cluster.
    pub drift_detected: IntCounterVec,
    /// Drift corrected per cluster.
    pub drift_corrected: IntCounterVec,
}

/// Buckets for latencies from milliseconds to a minute.
const LATENCY_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let metric = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(metric.clone()))?;
            Ok::<_, prometheus::Error>(metric)
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let metric = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                labels,
            )?;
            registry.register(Box::new(metric.clone()))?;
            Ok::<_, prometheus::Error>(metric)
        };
        let syncs = counter(
            "flotilla_syncs_total",
            "Syncs of a cluster, by result.",
            &["cluster", "result"],
        )?;
        let sync_duration = histogram(
            "flotilla_sync_duration_seconds",
            "Duration of a cluster's sync.",
            &["cluster"],
        )?;
        let commit_to_applied = histogram(
            "flotilla_commit_to_applied_seconds",
            "From a commit first seen to it applied in the cluster.",
            &["cluster"],
        )?;
        let git_fetches = counter(
            "flotilla_git_fetches_total",
            "Git fetches, by result.",
            &["result"],
        )?;
        let git_fetch_duration = histogram(
            "flotilla_git_fetch_duration_seconds",
            "Duration of a Git fetch.",
            &[],
        )?;
        let webhook_requests = counter(
            "flotilla_webhook_requests_total",
            "Webhook requests, by provider and result.",
            &["provider", "result"],
        )?;
        let plan_failures = counter(
            "flotilla_plan_failures_total",
            "Commits that failed to load, render or place; nothing was applied.",
            &["stage"],
        )?;
        let drift_detected = counter(
            "flotilla_drift_detected_total",
            "Managed objects changed or deleted in the cluster behind Flotilla's back.",
            &["cluster"],
        )?;
        let drift_corrected = counter(
            "flotilla_drift_corrected_total",
            "Drifted objects Flotilla re-applied.",
            &["cluster"],
        )?;
        let objects_managed = IntGaugeVec::new(
            Opts::new(
                "flotilla_objects_managed",
                "Objects Flotilla manages in the cluster.",
            ),
            &["cluster"],
        )?;
        registry.register(Box::new(objects_managed.clone()))?;
        let cluster_reachable = IntGaugeVec::new(
            Opts::new(
                "flotilla_cluster_reachable",
                "1 when the cluster answered in its last sync.",
            ),
            &["cluster"],
        )?;
        registry.register(Box::new(cluster_reachable.clone()))?;
        let cluster_ready = IntGaugeVec::new(
            Opts::new(
                "flotilla_cluster_ready",
                "1 when the cluster is Ready, 0 once its /readyz probes failed failure-threshold times in a row.",
            ),
            &["cluster"],
        )?;
        registry.register(Box::new(cluster_ready.clone()))?;
        let workloads = IntGaugeVec::new(
            Opts::new(
                "flotilla_workloads",
                "Managed workloads in the cluster by health: Progressing, Available or Degraded.",
            ),
            &["cluster", "state"],
        )?;
        registry.register(Box::new(workloads.clone()))?;
        let shards_held = prometheus::IntGauge::new(
            "flotilla_shards_held",
            "Shard Leases this replica holds (its clusters are synced here).",
        )?;
        registry.register(Box::new(shards_held.clone()))?;
        let last_successful_sync = GaugeVec::new(
            Opts::new(
                "flotilla_last_successful_sync_timestamp_seconds",
                "Unix time of the cluster's last successful sync.",
            ),
            &["cluster"],
        )?;
        registry.register(Box::new(last_successful_sync.clone()))?;
        Ok(Metrics {
            registry,
            syncs,
            sync_duration,
            commit_to_applied,
            objects_managed,
            git_fetches,
            git_fetch_duration,
            webhook_requests,
            cluster_reachable,
            cluster_ready,
            workloads,
            shards_held,
            last_successful_sync,
            plan_failures,
            drift_detected,
            drift_corrected,
        })
    }

    /// The text exposition format, for `GET /metrics`.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8_lossy(&buffer).into_owned()
    }
}
