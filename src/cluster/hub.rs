//! The hub: the cluster Flotilla runs in. It holds the member clusters' kubeconfig Secrets
//! (named by `AttachedCluster.spec.kubeconfig.secretRef`), the Leases that share clusters
//! between replicas (see [`crate::cluster::lease`]) and the Events Flotilla records.
//!
//! In a Pod, Flotilla authenticates as its service account, as client-go does: the apiserver
//! from `KUBERNETES_SERVICE_HOST`/`_PORT`, the token and CA from the mounted service-account
//! directory. The token file is read again as it is rotated.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::config::{
    AuthInfo, Cluster, Context, KubeConfigOptions, Kubeconfig, NamedAuthInfo, NamedCluster,
    NamedContext,
};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::{RwLock, watch};

use crate::apply::Member;
use crate::placement::types::SecretKeyRef;

/// Where a Pod's service-account credentials are mounted.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The namespace used when neither a flag nor the service account names one.
pub const DEFAULT_NAMESPACE: &str = "flotilla-system";
/// The Secret key read when an AttachedCluster's `secretRef` names none.
pub const DEFAULT_KUBECONFIG_KEY: &str = "kubeconfig";

/// How to reach the hub.
#[derive(Debug, Clone)]
pub struct HubSettings {
    /// A kubeconfig (its current context) instead of the in-cluster service account.
    pub kubeconfig: Option<PathBuf>,
    /// The service-account directory (`token`, `ca.crt`, `namespace`).
    pub service_account_dir: PathBuf,
    /// The agent's namespace; by default the service account's, else `flotilla-system`.
    pub namespace: Option<String>,
}

/// Why the hub could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// Neither a kubeconfig nor a Pod's environment.
    #[error(
        "no hub: KUBERNETES_SERVICE_HOST is not set (not in a Pod) and no --hub-kubeconfig was given"
    )]
    NotInCluster,
    /// A credential file is missing or unreadable.
    #[error("{path}: {problem}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        problem: String,
    },
    /// The client could not be built.
    #[error("hub client: {0}")]
    Client(String),
}

/// A connection to the hub, in the agent's namespace.
#[derive(Clone)]
pub struct Hub {
    /// The client, as the agent's service account in a Pod.
    pub client: kube::Client,
    /// The agent's namespace: its Secrets, Leases and Events live there.
    pub namespace: String,
}

impl Hub {
    /// Connects with a kubeconfig when one is given, else as the Pod's service account.
    pub async fn connect(settings: &HubSettings) -> Result<Hub, HubError> {
        let kubeconfig = match &settings.kubeconfig {
            Some(path) => Kubeconfig::read_from(path).map_err(|error| HubError::File {
                path: path.clone(),
                problem: error.to_string(),
            })?,
            None => in_cluster_kubeconfig(&settings.service_account_dir)?,
        };
        let namespace = match &settings.namespace {
            Some(namespace) => namespace.clone(),
            None => std::fs::read_to_string(settings.service_account_dir.join("namespace"))
                .map(|namespace| namespace.trim().to_string())
                .ok()
                .filter(|namespace| !namespace.is_empty())
                .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string()),
        };
        let mut config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|error| HubError::Client(error.to_string()))?;
        config.connect_timeout = Some(Duration::from_secs(5));
        config.read_timeout = Some(Duration::from_secs(30));
        let client =
            kube::Client::try_from(config).map_err(|error| HubError::Client(error.to_string()))?;
        Ok(Hub { client, namespace })
    }

    /// Records an Event about a member cluster in the hub (best effort: a failure is logged).
    /// It is attached to the cluster's AttachedCluster, where `kubectl describe` shows it.
    pub async fn event(&self, cluster: &str, warning: bool, reason: &str, message: &str) {
        let api: Api<k8s_openapi::api::core::v1::Event> =
            Api::namespaced(self.client.clone(), &self.namespace);
        let now = k8s_openapi::jiff::Timestamp::now();
        let event = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": format!("{cluster}."), "namespace": self.namespace},
            "involvedObject": {
                "apiVersion": "cluster.kurator.dev/v1alpha1",
                "kind": "AttachedCluster",
                "name": cluster,
                "namespace": self.namespace,
            },
            "type": if warning { "Warning" } else { "Normal" },
            "reason": reason,
            "message": message,
            "source": {"component": "flotilla"},
            "reportingComponent": "flotilla",
            "reportingInstance": "flotilla",
            "firstTimestamp": now.to_string(),
            "lastTimestamp": now.to_string(),
            "count": 1,
        });
        let created = match serde_json::from_value(event) {
            Ok(event) => api
                .create(&PostParams::default(), &event)
                .await
                .map(|_| ())
                .map_err(|error| error.to_string()),
            Err(error) => Err(error.to_string()),
        };
        if let Err(error) = created {
            tracing::warn!(cluster, reason, %error, "could not record an Event in the hub");
        }
    }
}

/// A kubeconfig equivalent to a Pod's in-cluster configuration. The token is given as a file so
/// that kube reads it again when the kubelet rotates it.
fn in_cluster_kubeconfig(dir: &Path) -> Result<Kubeconfig, HubError> {
    let host = std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| HubError::NotInCluster)?;
    let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
    // An IPv6 address needs brackets in a URL.
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    let token = dir.join("token");
    let ca = dir.join("ca.crt");
    for path in [&token, &ca] {
        if !path.is_file() {
            return Err(HubError::File {
                path: path.clone(),
                problem: "missing: is the service-account token mounted?".into(),
            });
        }
    }
    Ok(Kubeconfig {
        clusters: vec![NamedCluster {
            name: "hub".into(),
            cluster: Some(Cluster {
                server: Some(format!("https://{host}:{port}")),
                certificate_authority: Some(ca.display().to_string()),
                ..Default::default()
            }),
            other: Default::default(),
        }],
        auth_infos: vec![NamedAuthInfo {
            name: "hub".into(),
            auth_info: Some(AuthInfo {
                token_file: Some(token.display().to_string()),
                ..Default::default()
            }),
            other: Default::default(),
        }],
        contexts: vec![NamedContext {
            name: "hub".into(),
            context: Some(Context {
                cluster: "hub".into(),
                user: Some("hub".into()),
                ..Default::default()
            }),
            other: Default::default(),
        }],
        current_context: Some("hub".into()),
        ..Default::default()
    })
}

/// The Secrets of the agent's namespace, kept current by a watch, so a changed kubeconfig is
/// seen at once and reading one costs no request.
pub struct SecretStore {
    namespace: String,
    secrets: RwLock<HashMap<String, StoredSecret>>,
    /// Bumped on every change; `None` until the first list arrived.
    changed: watch::Sender<Option<u64>>,
}

struct StoredSecret {
    resource_version: String,
    data: BTreeMap<String, Vec<u8>>,
}

/// A member's kubeconfig as read from its Secret.
pub struct SecretKubeconfig {
    /// The Secret's resourceVersion: a different one means the kubeconfig changed.
    pub version: String,
    /// The kubeconfig.
    pub kubeconfig: Kubeconfig,
}

impl SecretStore {
    /// Starts watching the Secrets of the hub namespace.
    pub fn spawn(hub: &Hub) -> Arc<SecretStore> {
        let store = Arc::new(SecretStore {
            namespace: hub.namespace.clone(),
            secrets: RwLock::default(),
            changed: watch::channel(None).0,
        });
        let api: Api<Secret> = Api::namespaced(hub.client.clone(), &hub.namespace);
        tokio::spawn(store.clone().keep_current(api));
        store
    }

    /// Fires whenever a Secret changes.
    pub fn changes(&self) -> watch::Receiver<Option<u64>> {
        self.changed.subscribe()
    }

    /// The kubeconfig in `secret`; an error names the Secret, the key and the problem.
    pub async fn kubeconfig(&self, secret: &SecretKeyRef) -> Result<SecretKubeconfig, String> {
        let key = if secret.key.is_empty() {
            DEFAULT_KUBECONFIG_KEY
        } else {
            &secret.key
        };
        let what = format!("Secret {}/{} key {key}", self.namespace, secret.name);
        // Wait (briefly) for the first list, so a starting agent does not report every
        // cluster as missing its Secret.
        let mut changes = self.changes();
        let listed = tokio::time::timeout(
            Duration::from_secs(10),
            changes.wait_for(|version| version.is_some()),
        )
        .await
        .is_ok_and(|listed| listed.is_ok());
        if !listed {
            return Err(format!("{what}: the hub's Secrets could not be listed yet"));
        }
        let secrets = self.secrets.read().await;
        let stored = secrets
            .get(&secret.name)
            .ok_or_else(|| format!("{what}: no such Secret in the hub"))?;
        let bytes = stored
            .data
            .get(key)
            .ok_or_else(|| format!("{what}: the Secret has no such key"))?;
        let text = std::str::from_utf8(bytes).map_err(|_| format!("{what}: not UTF-8 text"))?;
        let kubeconfig = Kubeconfig::from_yaml(text).map_err(|error| format!("{what}: {error}"))?;
        Ok(SecretKubeconfig {
            version: stored.resource_version.clone(),
            kubeconfig,
        })
    }

    /// Keeps the map equal to the namespace's Secrets with kube's watcher: a fresh list
    /// replaces the map at once when complete, each change after it is applied as it comes.
    /// The watcher resumes from its last resourceVersion, lists again after 410 Gone, and
    /// backs off after errors.
    async fn keep_current(self: Arc<Self>, api: Api<Secret>) {
        let events =
            watcher::watcher(api, watcher::Config::default().timeout(25)).default_backoff();
        let mut events = std::pin::pin!(events);
        // The Secrets of a list in progress.
        let mut listing: HashMap<String, StoredSecret> = HashMap::new();
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                Err(error) => {
                    tracing::warn!(namespace = self.namespace, %error, "watching the hub's Secrets failed; retrying");
                    continue;
                }
            };
            match event {
                Event::Init => listing.clear(),
                Event::InitApply(secret) => store_secret(&mut listing, secret),
                Event::InitDone => {
                    *self.secrets.write().await = std::mem::take(&mut listing);
                    self.bump();
                }
                Event::Apply(secret) => {
                    store_secret(&mut *self.secrets.write().await, secret);
                    self.bump();
                }
                Event::Delete(secret) => {
                    if let Some(name) = &secret.metadata.name {
                        self.secrets.write().await.remove(name);
                    }
                    self.bump();
                }
            }
        }
    }

    fn bump(&self) {
        self.changed
            .send_modify(|version| *version = Some(version.unwrap_or(0) + 1));
    }
}

fn store_secret(secrets: &mut HashMap<String, StoredSecret>, secret: Secret) {
    let Some(name) = secret.metadata.name else {
        return;
    };
    let data = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(key, value)| (key, value.0))
        .collect();
    secrets.insert(
        name,
        StoredSecret {
            resource_version: secret.metadata.resource_version.unwrap_or_default(),
            data,
        },
    );
}

/// Where the member clusters' credentials come from.
#[derive(Clone)]
pub enum MemberCredentials {
    /// A kubeconfig file with one context per cluster, named like the cluster.
    Kubeconfig(PathBuf),
    /// The hub's Secrets, as named by each AttachedCluster.
    HubSecrets(Arc<SecretStore>),
}

impl MemberCredentials {
    /// Connects to a member cluster. Returns the member and the version of its credentials
    /// (a Secret's resourceVersion; empty for a file, which is read again on each connect).
    pub async fn connect(
        &self,
        cluster: &str,
        secret: Option<&SecretKeyRef>,
    ) -> Result<(Member, String), String> {
        match self {
            MemberCredentials::Kubeconfig(path) => {
                let kubeconfig = Kubeconfig::read_from(path)
                    .map_err(|error| format!("{}: {error}", path.display()))?;
                let member = Member::from_kubeconfig(&kubeconfig, path, cluster)
                    .await
                    .map_err(|error| error.to_string())?;
                Ok((member, String::new()))
            }
            MemberCredentials::HubSecrets(store) => {
                let secret = secret.ok_or_else(|| {
                    format!(
                        "cluster {cluster}: no AttachedCluster with spec.kubeconfig.secretRef names its kubeconfig Secret"
                    )
                })?;
                let loaded = store.kubeconfig(secret).await?;
                // The context named like the cluster, else the kubeconfig's current one.
                let context = loaded
                    .kubeconfig
                    .contexts
                    .iter()
                    .find(|context| context.name == cluster)
                    .map(|context| context.name.clone())
                    .or_else(|| loaded.kubeconfig.current_context.clone())
                    .or_else(|| {
                        loaded
                            .kubeconfig
                            .contexts
                            .first()
                            .map(|context| context.name.clone())
                    })
                    .unwrap_or_else(|| cluster.to_string());
                let origin = PathBuf::from(format!("Secret {}/{}", store.namespace, secret.name));
                let mut member = Member::from_kubeconfig(&loaded.kubeconfig, &origin, &context)
                    .await
                    .map_err(|error| error.to_string())?;
                member.name = cluster.to_string();
                Ok((member, loaded.version))
            }
        }
    }

    /// Fires when credentials may have changed (never for a file: it is read on reconnect).
    pub fn changes(&self) -> Option<watch::Receiver<Option<u64>>> {
        match self {
            MemberCredentials::Kubeconfig(_) => None,
            MemberCredentials::HubSecrets(store) => Some(store.changes()),
        }
    }

    /// The current version of a cluster's credentials, to tell whether a reconnect is due.
    pub async fn version(&self, secret: Option<&SecretKeyRef>) -> Option<String> {
        match (self, secret) {
            (MemberCredentials::HubSecrets(store), Some(secret)) => store
                .secrets
                .read()
                .await
                .get(&secret.name)
                .map(|stored| stored.resource_version.clone()),
            _ => None,
        }
    }
}
