//! Flotilla in a hub: its service account and deploy/'s RBAC, member kubeconfigs from
//! AttachedCluster Secrets, replicas sharing clusters through Leases, cluster failover and
//! workload health. One hub and six member apiservers serve every test of this binary.

#[path = "e2e/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use flotilla::apply::{SyncOptions, apply_cluster, member::connect_all};
use flotilla::render::render_tree;
use harness::{Agent, Clusters};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::config::Kubeconfig;
use serde_json::{Value, json};

const MEMBERS: [&str; 6] = [
    "member-1", "member-2", "member-3", "member-4", "member-5", "member-6",
];
const NAMESPACE: &str = "flotilla-system";

fn clusters() -> &'static Clusters {
    static CLUSTERS: OnceLock<Clusters> = OnceLock::new();
    CLUSTERS.get_or_init(|| {
        let mut names = vec!["hub"];
        names.extend(MEMBERS);
        Clusters::start(&names)
    })
}

/// deploy/ applied to the hub for real, and the service-account directory a Pod would get:
/// the token the hub's controller issued for deploy/'s ServiceAccount, its CA, the namespace.
struct InHub {
    service_account_dir: tempfile::TempDir,
    hub_port: String,
    token: String,
}

static IN_HUB: tokio::sync::OnceCell<InHub> = tokio::sync::OnceCell::const_new();

async fn in_hub() -> &'static InHub {
    IN_HUB
        .get_or_init(|| async {
            let clusters = clusters();
            let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
            let rendered = render_tree(&deploy, Path::new(".")).expect("deploy/ renders");
            let members = connect_all(&clusters.kubeconfig, &["hub".to_string()])
                .await
                .expect("kubeconfig");
            let hub = members[0].1.as_ref().expect("hub client");
            let options = SyncOptions {
                name: "deploy".into(),
                ..Default::default()
            };
            let report =
                apply_cluster(hub, &rendered.objects, &Default::default(), &options, None).await;
            assert!(
                report.failed.is_empty(),
                "deploy/ refused: {:?}",
                report.failed
            );

            // A token for deploy/'s ServiceAccount from the TokenRequest API, as the kubelet
            // projects into a Pod (no token Secrets since 1.24), and the hub's CA.
            let client = clusters.client("hub").await;
            let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
            let accounts: Api<ServiceAccount> = Api::namespaced(client, NAMESPACE);
            let request = TokenRequest {
                spec: Some(TokenRequestSpec {
                    expiration_seconds: Some(7200),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let token = accounts
                .create_token_request("flotilla", &PostParams::default(), &request)
                .await
                .expect("TokenRequest")
                .status
                .expect("a TokenRequest status")
                .token
                .expect("a token in the TokenRequest's status");
            let kubeconfig = Kubeconfig::read_from(&clusters.kubeconfig).expect("kubeconfig");
            let hub = kubeconfig
                .clusters
                .iter()
                .find(|c| c.name == "hub")
                .and_then(|c| c.cluster.as_ref())
                .expect("the hub in the kubeconfig");
            let ca = base64::Engine::decode(
                &base64::engine::general_purpose::STANDARD,
                hub.certificate_authority_data
                    .as_ref()
                    .expect("the hub's CA"),
            )
            .expect("base64 CA");
            let server = hub.server.clone().expect("hub server");
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::write(dir.path().join("token"), &token).expect("token");
            std::fs::write(dir.path().join("ca.crt"), &ca).expect("ca");
            std::fs::write(dir.path().join("namespace"), NAMESPACE).expect("namespace");
            // Member kubeconfigs as Secrets, named as the AttachedClusters say.
            for member in MEMBERS {
                put_kubeconfig_secret(
                    &secrets,
                    &secret_name("", member),
                    &member_kubeconfig(member),
                )
                .await;
            }
            InHub {
                service_account_dir: dir,
                hub_port: server.rsplit(':').next().expect("port").to_string(),
                token,
            }
        })
        .await
}

impl InHub {
    /// `flotilla run` as in a Pod: the service account's token, the hub's Service address.
    fn agent(&self, args: &[&str], level: &str) -> Agent {
        let dir = self.service_account_dir.path().display().to_string();
        let mut all = vec!["--service-account-dir", &dir];
        all.extend(args);
        Agent::start_logged(
            &all,
            &[
                ("KUBERNETES_SERVICE_HOST", "127.0.0.1"),
                ("KUBERNETES_SERVICE_PORT", &self.hub_port),
            ],
            level,
        )
    }

    /// A client of the hub as the agent's service account.
    async fn service_account_client(&self) -> kube::Client {
        let kubeconfig = Kubeconfig::read_from(&clusters().kubeconfig).expect("kubeconfig");
        let mut kubeconfig = kubeconfig.clone();
        for user in &mut kubeconfig.auth_infos {
            if let Some(auth) = user.auth_info.as_mut() {
                auth.token = Some(self.token.clone().into());
            }
        }
        let options = kube::config::KubeConfigOptions {
            context: Some("hub".into()),
            ..Default::default()
        };
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .expect("config");
        kube::Client::try_from(config).expect("client")
    }
}

/// A kubeconfig with only this member: its one context is the current one.
fn member_kubeconfig(member: &str) -> String {
    let text = std::fs::read_to_string(&clusters().kubeconfig).expect("kubeconfig");
    let kubeconfig: Value = serde_saphyr::from_str(&text).expect("kubeconfig YAML");
    let cluster = kubeconfig["clusters"]
        .as_array()
        .and_then(|clusters| clusters.iter().find(|c| c["name"] == member))
        .expect("cluster");
    // JSON is YAML: the agent reads it as any kubeconfig.
    json!({
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "only",
        "clusters": [{"name": "only", "cluster": cluster["cluster"]}],
        "users": [{"name": "only", "user": kubeconfig["users"][0]["user"]}],
        "contexts": [{"name": "only", "context": {"cluster": "only", "user": "only"}}],
    })
    .to_string()
}

/// The kubeconfig Secret of a member: tests that break or hold back Secrets use their own
/// `prefix`, so they never disturb the others.
fn secret_name(prefix: &str, member: &str) -> String {
    format!("{prefix}{member}-kubeconfig")
}

async fn put_kubeconfig_secret(secrets: &Api<Secret>, name: &str, kubeconfig: &str) {
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "stringData": {"kubeconfig": kubeconfig},
    });
    secrets
        .patch(
            name,
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(secret),
        )
        .await
        .expect("kubeconfig Secret");
}

/// Polls `check` every 200 ms until it gives a value, or panics after `seconds`.
async fn wait_for<T, F, Fut>(what: &str, seconds: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not after {seconds} s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A fleet of these members, each with an AttachedCluster naming its kubeconfig Secret (see
/// [`secret_name`]), plus `resources`.
fn fleet_with_secrets(prefix: &str, members: &[&str], resources: &str) -> String {
    let mut yaml = String::from(
        "apiVersion: fleet.kurator.dev/v1alpha1\nkind: Fleet\nmetadata: {name: fleet, namespace: flotilla-system}\nspec:\n  clusters:\n",
    );
    for member in members {
        yaml.push_str(&format!("    - name: {member}\n"));
    }
    for member in members {
        yaml.push_str(&format!(
            "---\napiVersion: cluster.kurator.dev/v1alpha1\nkind: AttachedCluster\nmetadata: {{name: {member}, namespace: flotilla-system}}\nspec:\n  kubeconfig:\n    secretRef: {{name: {secret}, key: kubeconfig}}\n",
            secret = secret_name(prefix, member)
        ));
    }
    yaml.push_str("---\n");
    yaml.push_str(resources);
    yaml
}

fn config_map_to_all(namespace: &str, version: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{name: settings, namespace: {namespace}}}
data: {{version: "{version}"}}
---
apiVersion: policy.karmada.io/v1alpha1
kind: PropagationPolicy
metadata: {{name: settings, namespace: {namespace}}}
spec:
  resourceSelectors: [{{apiVersion: v1, kind: ConfigMap, name: settings}}]
  placement: {{}}
"#
    )
}

async fn config_map_version(member: &str, namespace: &str) -> Option<String> {
    let client = clusters().client(member).await;
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    api.get_opt("settings")
        .await
        .ok()??
        .data?
        .get("version")
        .cloned()
}

fn synced_here(status: &Value) -> BTreeSet<String> {
    status["clusters"]
        .as_object()
        .map(|clusters| {
            clusters
                .iter()
                .filter(|(_, view)| view["synced_here"] == true)
                .map(|(name, _)| name.clone())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_runs_as_its_service_account_with_kubeconfigs_from_secrets() {
    let clusters = clusters();
    let _shared = clusters.shared().await;
    let in_hub = in_hub().await;
    let fleet = harness::write_fleet(&[(
        "fleet.yaml",
        &fleet_with_secrets(
            "sa-",
            &["member-1", "member-2", "member-3"],
            &config_map_to_all("sa-app", "v1"),
        ),
    )]);
    let admin = clusters.client("hub").await;
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), NAMESPACE);
    for member in ["member-1", "member-2"] {
        put_kubeconfig_secret(
            &secrets,
            &secret_name("sa-", member),
            &member_kubeconfig(member),
        )
        .await;
    }
    let path = fleet.path().display().to_string();
    let agent = in_hub.agent(
        &["--path", &path, "--name", "sa", "--identity", "sa-replica"],
        "info",
    );

    // member-1 and member-2 sync through their Secrets; member-3's Secret is missing, which is
    // its own error only.
    for member in ["member-1", "member-2"] {
        wait_for(&format!("{member} synced"), 60, || async {
            (config_map_version(member, "sa-app").await.as_deref() == Some("v1")).then_some(())
        })
        .await;
    }
    let status = wait_for("member-3's error in /status", 30, || async {
        let status = agent.status();
        status["clusters"]["member-3"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("Secret flotilla-system/sa-member-3-kubeconfig"))
            .then_some(status)
    })
    .await;
    assert!(
        status["clusters"]["member-3"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("no such Secret"),
        "{status:#}"
    );
    assert_eq!(
        status["clusters"]["member-1"]["status"], "synced",
        "{status:#}"
    );
    assert_eq!(status["replica"], "sa-replica");

    // The Secret appears: it is read at once, without a restart.
    put_kubeconfig_secret(
        &secrets,
        &secret_name("sa-", "member-3"),
        &member_kubeconfig("member-3"),
    )
    .await;
    wait_for(
        "member-3 synced after its Secret was created",
        30,
        || async {
            (config_map_version("member-3", "sa-app").await.as_deref() == Some("v1")).then_some(())
        },
    )
    .await;

    // The agent holds its shard Leases as its service account.
    let leases: Api<Lease> = Api::namespaced(admin.clone(), NAMESPACE);
    let held = leases
        .list(&ListParams::default().labels("flotilla.dev/lease-group=flotilla-sa"))
        .await
        .expect("leases")
        .items
        .into_iter()
        .filter(|l| {
            l.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some("sa-replica")
        })
        .count();
    assert!(held >= 16, "16 shard Leases and its own are held: {held}");

    // What deploy/'s Role does not grant is refused to the same account.
    let account = in_hub.service_account_client().await;
    let elsewhere: Api<Secret> = Api::namespaced(account.clone(), "kube-system");
    let refused = elsewhere.list(&ListParams::default()).await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 403),
        "Secrets in kube-system: {refused:?}"
    );
    let everywhere: Api<Secret> = Api::all(account.clone());
    let refused = everywhere.list(&ListParams::default()).await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 403),
        "Secrets cluster-wide: {refused:?}"
    );
    let own: Api<Secret> = Api::namespaced(account.clone(), NAMESPACE);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "written-by-flotilla"}, "stringData": {"a": "b"}
    }))
    .expect("secret");
    let refused = own.create(&PostParams::default(), &secret).await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 403),
        "writing a Secret: {refused:?}"
    );
    let deployments: Api<Deployment> = Api::namespaced(account.clone(), NAMESPACE);
    let refused = deployments.list(&ListParams::default()).await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 403),
        "Deployments in the hub: {refused:?}"
    );
    assert!(
        own.list(&ListParams::default()).await.is_ok(),
        "its own Secrets are readable"
    );

    // A broken kubeconfig is that cluster's error; the others go on.
    put_kubeconfig_secret(
        &secrets,
        &secret_name("sa-", "member-2"),
        "not: [a kubeconfig",
    )
    .await;
    wait_for("member-2's broken Secret in /status", 30, || async {
        let status = agent.status();
        let error = status["clusters"]["member-2"]["error"]
            .as_str()?
            .to_string();
        error.contains("sa-member-2-kubeconfig").then_some(())
    })
    .await;
    std::fs::write(
        fleet.path().join("fleet.yaml"),
        fleet_with_secrets(
            "sa-",
            &["member-1", "member-2", "member-3"],
            &config_map_to_all("sa-app", "v2"),
        ),
    )
    .expect("fleet edit");
    for member in ["member-1", "member-3"] {
        wait_for(&format!("{member} synced v2"), 30, || async {
            (config_map_version(member, "sa-app").await.as_deref() == Some("v2")).then_some(())
        })
        .await;
    }
    assert_eq!(
        config_map_version("member-2", "sa-app").await.as_deref(),
        Some("v1"),
        "member-2 kept what was applied"
    );
    put_kubeconfig_secret(
        &secrets,
        &secret_name("sa-", "member-2"),
        &member_kubeconfig("member-2"),
    )
    .await;
    wait_for(
        "member-2 synced v2 after its Secret was fixed",
        30,
        || async {
            (config_map_version("member-2", "sa-app").await.as_deref() == Some("v2")).then_some(())
        },
    )
    .await;
}

/// When an agent acquired (true) or released (false) a cluster, as logged.
type OwnershipEvent = (Instant, String, bool);

/// When each agent logged that it acquired or released each cluster.
fn ownership_log(agent: &Agent) -> Vec<OwnershipEvent> {
    let log = agent.log.lock().unwrap_or_else(|p| p.into_inner());
    log.iter()
        .filter_map(|(at, line)| {
            let line: Value = serde_json::from_str(line).ok()?;
            let message = line["fields"]["message"].as_str()?;
            let acquired = match message {
                "cluster acquired" => true,
                "cluster released" => false,
                _ => return None,
            };
            let cluster = line["fields"]["cluster"].as_str()?.to_string();
            Some((*at, cluster, acquired))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_six_clusters_and_survive_a_sigkill() {
    let clusters = clusters();
    let _shared = clusters.shared().await;
    let in_hub = in_hub().await;
    let fleet = harness::write_fleet(&[(
        "fleet.yaml",
        &fleet_with_secrets("", &MEMBERS, &config_map_to_all("ha-app", "v1")),
    )]);
    let path = fleet.path().display().to_string();
    let started = Instant::now();
    let mut agents: Vec<(String, Agent)> = ["replica-a", "replica-b", "replica-c"]
        .into_iter()
        .map(|identity| {
            let agent = in_hub.agent(
                &[
                    "--path",
                    &path,
                    "--name",
                    "ha",
                    "--identity",
                    identity,
                    "--lease-duration",
                    "6s",
                ],
                "info",
            );
            (identity.to_string(), agent)
        })
        .collect();

    // Every cluster is synced, each by exactly one replica.
    let owners = wait_for("six clusters shared by three replicas", 90, || async {
        let mut owners: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (identity, agent) in &agents {
            for cluster in synced_here(&agent.status()) {
                owners.entry(cluster).or_default().push(identity.clone());
            }
        }
        (owners.len() == MEMBERS.len() && owners.values().all(|o| o.len() == 1)).then_some(owners)
    })
    .await;
    for member in MEMBERS {
        wait_for(&format!("{member} synced"), 60, || async {
            (config_map_version(member, "ha-app").await.as_deref() == Some("v1")).then_some(())
        })
        .await;
    }
    println!("clusters shared after {:?}: {owners:?}", started.elapsed());

    // SIGKILL the replica that holds the most clusters.
    let victim = agents
        .iter()
        .map(|(identity, _)| identity.clone())
        .max_by_key(|identity| owners.values().filter(|o| o[0] == *identity).count())
        .expect("a replica");
    let lost: Vec<String> = owners
        .iter()
        .filter(|(_, o)| o[0] == victim)
        .map(|(cluster, _)| cluster.clone())
        .collect();
    assert!(!lost.is_empty());
    let position = agents
        .iter()
        .position(|(i, _)| *i == victim)
        .expect("victim");
    let (_, mut killed) = agents.remove(position);
    killed.child.kill().expect("SIGKILL");
    let killed_at = Instant::now();
    killed.child.wait().expect("reaped");

    // A new commit reaches every cluster, the lost ones through the survivors.
    std::fs::write(
        fleet.path().join("fleet.yaml"),
        fleet_with_secrets("", &MEMBERS, &config_map_to_all("ha-app", "v2")),
    )
    .expect("fleet edit");
    for member in MEMBERS {
        wait_for(
            &format!("{member} synced v2 after the kill"),
            60,
            || async {
                (config_map_version(member, "ha-app").await.as_deref() == Some("v2")).then_some(())
            },
        )
        .await;
    }
    println!(
        "{victim} killed; its clusters {lost:?} synced again {:?} later",
        killed_at.elapsed()
    );
    let survivors: BTreeMap<String, BTreeSet<String>> =
        wait_for("survivors hold all six", 30, || async {
            let held: BTreeMap<String, BTreeSet<String>> = agents
                .iter()
                .map(|(identity, agent)| (identity.clone(), synced_here(&agent.status())))
                .collect();
            let all: Vec<&String> = held.values().flatten().collect();
            (all.len() == MEMBERS.len()
                && all.iter().collect::<BTreeSet<_>>().len() == MEMBERS.len())
            .then_some(held)
        })
        .await;
    println!("after the kill: {survivors:?}");

    // No cluster was ever synced by two replicas at once: per cluster, the intervals between
    // "acquired" and "released" (or the kill) of different replicas never overlap.
    let end = Instant::now();
    let mut intervals: BTreeMap<String, Vec<(Instant, Instant, String)>> = BTreeMap::new();
    let mut logs: Vec<(String, Vec<OwnershipEvent>, Instant)> = agents
        .iter()
        .map(|(identity, agent)| (identity.clone(), ownership_log(agent), end))
        .collect();
    logs.push((victim.clone(), ownership_log(&killed), killed_at));
    for (identity, log, until) in logs {
        let mut open: BTreeMap<String, Instant> = BTreeMap::new();
        for (at, cluster, acquired) in log {
            if acquired {
                open.insert(cluster, at);
            } else if let Some(from) = open.remove(&cluster) {
                intervals
                    .entry(cluster)
                    .or_default()
                    .push((from, at, identity.clone()));
            }
        }
        for (cluster, from) in open {
            intervals
                .entry(cluster)
                .or_default()
                .push((from, until, identity.clone()));
        }
    }
    assert_eq!(
        intervals.len(),
        MEMBERS.len(),
        "every cluster was acquired: {intervals:?}"
    );
    for (cluster, mut spans) in intervals {
        spans.sort();
        for pair in spans.windows(2) {
            assert!(
                pair[0].1 <= pair[1].0,
                "{cluster}: {} held it until {:?} after {} took it",
                pair[0].2,
                pair[0].1 - pair[1].0,
                pair[1].2
            );
        }
        if lost.contains(&cluster) {
            let taker = spans.last().expect("a span");
            assert_ne!(taker.2, victim, "{cluster} was taken over");
            println!(
                "{cluster}: taken over {:?} after the kill",
                taker.0 - killed_at
            );
        }
    }
    drop(killed);

    // A replica stopped with SIGTERM frees its shard Leases and drops its own before it exits,
    // and the last replica then syncs all six.
    let (stopping, mut stopped) = agents.remove(0);
    let status = std::process::Command::new("kill")
        .args(["-TERM", &stopped.child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let exit = stopped.child.wait().expect("exited");
    assert!(
        exit.success(),
        "{stopping} exits cleanly on SIGTERM: {exit:?}"
    );
    let leases: Api<Lease> = Api::namespaced(clusters.client("hub").await, NAMESPACE);
    let named: Vec<String> = leases
        .list(&ListParams::default().labels("flotilla.dev/lease-group=flotilla-ha"))
        .await
        .expect("leases")
        .items
        .into_iter()
        .filter(|l| l.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some(&stopping))
        .filter_map(|l| l.metadata.name)
        .collect();
    assert!(
        named.is_empty(),
        "{stopping} still holds {named:?} after it stopped"
    );
    let (last, agent) = &agents[0];
    wait_for(&format!("{last} syncs all six"), 60, || async {
        (synced_here(&agent.status()).len() == MEMBERS.len()).then_some(())
    })
    .await;
    drop(stopped);
}

async fn deployment_replicas(member: &str, namespace: &str, name: &str) -> Option<i64> {
    let client = clusters().client(member).await;
    let api: Api<Deployment> = Api::namespaced(client, namespace);
    let deployment = api.get_opt(name).await.ok()??;
    deployment.spec.replicas.map(i64::from)
}

fn metric(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|line| line.starts_with(series))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_member_fails_its_divided_replicas_over_and_gets_them_back() {
    let clusters = clusters();
    // deploy/ makes the hub namespace, where the Leases and Events go.
    in_hub().await;
    let _exclusive = clusters.exclusive().await;
    let kubeconfig = clusters.kubeconfig.display().to_string();
    let fleet = harness::write_fleet(&[(
        "fleet.yaml",
        &harness::divided_web_fleet(&["member-4", "member-5", "member-6"], "fo-app"),
    )]);
    let path = fleet.path().display().to_string();
    // Members from the kubeconfig; the hub (its current context) for Events and Leases.
    let agent = Agent::start_logged(
        &[
            "--path",
            &path,
            "--kubeconfig",
            &kubeconfig,
            "--hub-kubeconfig",
            &kubeconfig,
            "--namespace",
            NAMESPACE,
            "--name",
            "failover",
            "--identity",
            "solo",
        ],
        &[],
        "info",
    );
    let division = || async {
        let mut division = Vec::new();
        for member in ["member-4", "member-5", "member-6"] {
            division.push(deployment_replicas(member, "fo-app", "web").await);
        }
        division
    };
    let planned = wait_for("the planned division 2/2/2", 90, || async {
        (division().await == [Some(2), Some(2), Some(2)]).then_some(true)
    });
    let planned = tokio::time::timeout(Duration::from_secs(61), planned).await;
    if planned.is_err() {
        let log = agent.log.lock().unwrap_or_else(|p| p.into_inner()).clone();
        panic!("{:#}\n{log:?}", agent.status());
    }

    clusters.stop("member-6");
    let stopped = Instant::now();
    wait_for(
        "member-6's replicas on member-4 and member-5",
        30,
        || async {
            let now = division().await;
            (now[0] == Some(3) && now[1] == Some(3)).then_some(())
        },
    )
    .await;
    println!("failover took {:?}", stopped.elapsed());
    let status = agent.status();
    assert_eq!(
        status["clusters"]["member-6"]["health"], "NotReady",
        "{status:#}"
    );
    let failover = &status["failovers"][0];
    assert_eq!(
        failover["resource"], "Deployment.apps fo-app/web",
        "{status:#}"
    );
    assert!(
        failover["unavailable"]["member-6"]
            .as_str()
            .is_some_and(|r| r.contains("readyz"))
    );
    assert_eq!(
        failover["planned"][2],
        json!({"cluster": "member-6", "replicas": 2})
    );
    let (_, metrics) = agent.request("GET", "/metrics", &[], b"");
    assert_eq!(
        metric(&metrics, "flotilla_cluster_ready{cluster=\"member-6\"}"),
        Some(0.0)
    );
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(clusters.client("hub").await, NAMESPACE);
    let reasons = |list: Vec<k8s_openapi::api::core::v1::Event>| -> Vec<String> {
        list.into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some("member-6"))
            .filter_map(|e| e.reason)
            .collect()
    };
    let recorded = reasons(
        events
            .list(&ListParams::default())
            .await
            .expect("events")
            .items,
    );
    assert!(
        recorded.contains(&"ClusterNotReady".to_string()),
        "{recorded:?}"
    );

    clusters.start_again("member-6");
    let started = Instant::now();
    wait_for("the planned division back", 60, || async {
        (division().await == [Some(2), Some(2), Some(2)]).then_some(())
    })
    .await;
    println!("restored {:?} after the restart", started.elapsed());
    let status = agent.status();
    assert_eq!(
        status["clusters"]["member-6"]["health"], "Ready",
        "{status:#}"
    );
    assert!(status.get("failovers").is_none(), "{status:#}");
    let recorded = reasons(
        events
            .list(&ListParams::default())
            .await
            .expect("events")
            .items,
    );
    assert!(
        recorded.contains(&"ClusterReady".to_string()),
        "{recorded:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_on_simulated_nodes_become_available_complete_or_degraded_for_real() {
    let clusters = clusters();
    let _shared = clusters.shared().await;
    let kubeconfig = clusters.kubeconfig.display().to_string();
    let client = clusters.client("member-1").await;
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let node_count = nodes
        .list(&ListParams::default())
        .await
        .expect("nodes")
        .items
        .len();
    assert!(
        node_count > 0,
        "member-1 has no Nodes: this test needs the current lane's simulated nodes (kwok), \
         which FLOTILLA_KUBE=1.20 does not start"
    );
    // Pods really run on kwok's nodes: the controllers write every status. An image tagged
    // `broken` crash-loops, or fails a Job's pod (tests/e2e/kwok/broken-images.yaml).
    let fleet = harness::write_fleet(&[(
        "fleet.yaml",
        r#"apiVersion: fleet.kurator.dev/v1alpha1
kind: Fleet
metadata: {name: fleet, namespace: flotilla-system}
spec:
  clusters: [{name: member-1}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: wh-app}
spec:
  replicas: 2
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: db, image: "postgres:16", resources: {requests: {cpu: 500m}}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: crashing, namespace: wh-app}
spec:
  replicas: 1
  progressDeadlineSeconds: 5
  selector: {matchLabels: {app: crashing}}
  template:
    metadata: {labels: {app: crashing}}
    spec:
      containers: [{name: app, image: "app:broken"}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: migrate, namespace: wh-app}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: migrate, image: "migrate:1"}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: broken-migrate, namespace: wh-app}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers: [{name: migrate, image: "migrate:broken"}]
---
apiVersion: policy.karmada.io/v1alpha1
kind: PropagationPolicy
metadata: {name: all, namespace: wh-app}
spec:
  resourceSelectors:
    - {apiVersion: apps/v1, kind: StatefulSet}
    - {apiVersion: apps/v1, kind: Deployment}
    - {apiVersion: batch/v1, kind: Job}
  placement: {}
"#,
    )]);
    let path = fleet.path().display().to_string();
    let agent = Agent::start(&[
        "--path",
        &path,
        "--kubeconfig",
        &kubeconfig,
        "--name",
        "health",
    ]);
    agent.wait_ready();
    let health = |object: &'static str| {
        let agent = &agent;
        move || async move {
            let status = agent.status();
            let workload = &status["clusters"]["member-1"]["workloads"][object];
            workload["state"]
                .as_str()
                .map(|s| (s.to_string(), workload["reason"].to_string()))
        }
    };
    let in_state = |object: &'static str, wanted: &'static str| {
        let health = health(object);
        move || async move {
            let (state, reason) = health().await?;
            (state == wanted).then_some(reason)
        }
    };
    wait_for(
        "the StatefulSet's pods run: Available",
        60,
        in_state("StatefulSet.apps wh-app/db", "Available"),
    )
    .await;
    wait_for(
        "the Job's pod succeeds: Available",
        60,
        in_state("Job.batch wh-app/migrate", "Available"),
    )
    .await;
    let reason = wait_for(
        "the crash-looping rollout passes its deadline: Degraded",
        60,
        in_state("Deployment.apps wh-app/crashing", "Degraded"),
    )
    .await;
    assert!(reason.contains("ProgressDeadlineExceeded"), "{reason}");
    let reason = wait_for(
        "the Job whose pod fails: Degraded",
        60,
        in_state("Job.batch wh-app/broken-migrate", "Degraded"),
    )
    .await;
    assert!(reason.contains("BackoffLimitExceeded"), "{reason}");
    let (_, metrics) = agent.request("GET", "/metrics", &[], b"");
    assert_eq!(
        metric(
            &metrics,
            "flotilla_workloads{cluster=\"member-1\",state=\"Degraded\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &metrics,
            "flotilla_workloads{cluster=\"member-1\",state=\"Available\"}"
        ),
        Some(2.0)
    );
}
