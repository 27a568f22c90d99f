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
    AuthInfo, Cluster, Context, KubeConfigOptions, Kubeconfig, KubeconfigError, NamedAuthInfo,
    NamedCluster, NamedContext,
};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::{RwLock, watch};

use crate::apply::{ApplyError, Member};
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

/// Why a kubeconfig could not be read, told without its text: a YAML error quotes the lines
/// around it, and a kubeconfig holds credentials. So a YAML error keeps only where it is.
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigProblem {
    /// Not YAML of a kubeconfig.
    #[error("not a valid kubeconfig (YAML error{})", position(at))]
    Yaml {
        /// The line and column of the error, when known.
        at: Option<(u64, u64)>,
    },
    /// Any other problem (the file cannot be read, say); these name no contents.
    #[error(transparent)]
    Other(KubeconfigError),
}

/// ` at line L, column C`, when known.
fn position(at: &Option<(u64, u64)>) -> String {
    at.map(|(line, column)| format!(" at line {line}, column {column}"))
        .unwrap_or_default()
}

impl From<KubeconfigError> for KubeconfigProblem {
    fn from(error: KubeconfigError) -> Self {
        match error {
            KubeconfigError::Parse(error) => KubeconfigProblem::Yaml {
                at: error
                    .location()
                    .map(|location| (location.line(), location.column())),
            },
            other => KubeconfigProblem::Other(other),
        }
    }
}

/// Why the hub could not be reached. Connecting makes no request (the client connects on first
/// use), so every variant is a matter of configuration: none is retryable.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// Neither a kubeconfig nor a Pod's environment.
    #[error(
        "no hub: KUBERNETES_SERVICE_HOST is not set (not in a Pod) and no --hub-kubeconfig was given"
    )]
    NotInCluster,
    /// A service-account file (token, CA) is not mounted.
    #[error("{}: missing: is the service-account token mounted?", path.display())]
    MissingFile {
        /// The file.
        path: PathBuf,
    },
    /// The `--hub-kubeconfig` file cannot be read.
    #[error("{}", path.display())]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// Why it cannot be read.
        #[source]
        source: KubeconfigProblem,
    },
    /// No client configuration can be made of the kubeconfig (a certificate it names, say).
    #[error("hub client")]
    Config(#[source] KubeconfigError),
    /// The client could not be built.
    #[error("hub client")]
    Client(#[source] kube::Error),
}

impl HubError {
    /// Whether connecting again may succeed: never without a change to the flags, the
    /// kubeconfig or the Pod's mounts.
    pub fn is_retryable(&self) -> bool {
        false
    }

    /// A fixed name of what went wrong, for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            HubError::NotInCluster => "not_in_cluster",
            HubError::MissingFile { .. } => "service_account_missing",
            HubError::Kubeconfig { .. } => "kubeconfig_invalid",
            HubError::Config(_) | HubError::Client(_) => "client",
        }
    }
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
            Some(path) => Kubeconfig::read_from(path).map_err(|source| HubError::Kubeconfig {
                path: path.clone(),
                source: source.into(),
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
                .map_err(HubError::Config)?;
        config.connect_timeout = Some(Duration::from_secs(5));
        config.read_timeout = Some(Duration::from_secs(30));
        let client = kube::Client::try_from(config).map_err(HubError::Client)?;
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
        let event = match serde_json::from_value(event) {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(cluster, reason, %error, "could not make an Event for the hub");
                return;
            }
        };
        if let Err(error) = api.create(&PostParams::default(), &event).await {
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
            return Err(HubError::MissingFile { path: path.clone() });
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

/// A member's kubeconfig could not be read from its Secret in the hub. The message names the
/// Secret and the key; the problem is the source. Never holds the Secret's contents.
#[derive(Debug, thiserror::Error)]
#[error("Secret {namespace}/{name} key {key}")]
pub struct SecretError {
    /// The hub namespace.
    pub namespace: String,
    /// The Secret's name.
    pub name: String,
    /// The key read.
    pub key: String,
    /// What is wrong.
    #[source]
    pub problem: SecretProblem,
}

/// What is wrong with a member's kubeconfig Secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretProblem {
    /// The hub's Secrets have not been listed yet (the hub is slow or unreachable).
    #[error("the hub's Secrets could not be listed yet")]
    NotListed,
    /// No Secret of that name.
    #[error("no such Secret in the hub")]
    NoSecret,
    /// The Secret lacks the key.
    #[error("the Secret has no such key")]
    NoKey,
    /// The value is not text.
    #[error("not UTF-8 text")]
    NotUtf8(#[source] std::str::Utf8Error),
    /// The value is not a kubeconfig.
    #[error(transparent)]
    Invalid(KubeconfigProblem),
}

impl SecretError {
    /// Whether reading again may succeed without a change to the Secret: only while the hub's
    /// Secrets are not listed yet. A missing Secret or key, or a value that is not a
    /// kubeconfig, stays so until the Secret changes (which [`SecretStore::changes`] tells).
    pub fn is_retryable(&self) -> bool {
        matches!(self.problem, SecretProblem::NotListed)
    }

    /// A fixed name of what went wrong, for metric labels.
    pub fn kind(&self) -> &'static str {
        match self.problem {
            SecretProblem::NotListed => "secrets_not_listed",
            SecretProblem::NoSecret => "secret_missing",
            SecretProblem::NoKey => "secret_key_missing",
            SecretProblem::NotUtf8(_) | SecretProblem::Invalid(_) => "kubeconfig_invalid",
        }
    }
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
    pub async fn kubeconfig(&self, secret: &SecretKeyRef) -> Result<SecretKubeconfig, SecretError> {
        let key = if secret.key.is_empty() {
            DEFAULT_KUBECONFIG_KEY
        } else {
            &secret.key
        };
        let error = |problem| SecretError {
            namespace: self.namespace.clone(),
            name: secret.name.clone(),
            key: key.to_string(),
            problem,
        };
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
            return Err(error(SecretProblem::NotListed));
        }
        let secrets = self.secrets.read().await;
        let stored = secrets
            .get(&secret.name)
            .ok_or_else(|| error(SecretProblem::NoSecret))?;
        let bytes = stored
            .data
            .get(key)
            .ok_or_else(|| error(SecretProblem::NoKey))?;
        let text =
            std::str::from_utf8(bytes).map_err(|source| error(SecretProblem::NotUtf8(source)))?;
        let kubeconfig = Kubeconfig::from_yaml(text)
            .map_err(|source| error(SecretProblem::Invalid(source.into())))?;
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

/// Why a member cluster could not be connected to. Only a hub whose Secrets are not listed
/// yet is worth retrying soon; the rest waits for a change to the kubeconfig, the Secret or
/// the fleet.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The members' kubeconfig file cannot be read.
    #[error("{}", path.display())]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// Why it cannot be read.
        #[source]
        source: KubeconfigProblem,
    },
    /// The cluster has no Secret to read its kubeconfig from.
    #[error(
        "cluster {cluster}: no AttachedCluster with spec.kubeconfig.secretRef names its kubeconfig Secret"
    )]
    NoSecretRef {
        /// The cluster.
        cluster: String,
    },
    /// Its kubeconfig Secret in the hub is unusable.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// No client can be made of its kubeconfig (no such context, bad credentials).
    #[error(transparent)]
    Client(#[from] ApplyError),
}

impl ConnectError {
    /// Whether connecting again may succeed with nothing changed (see [`SecretError::is_retryable`]).
    pub fn is_retryable(&self) -> bool {
        match self {
            ConnectError::Secret(error) => error.is_retryable(),
            ConnectError::Kubeconfig { .. }
            | ConnectError::NoSecretRef { .. }
            | ConnectError::Client(_) => false,
        }
    }

    /// A fixed name of what went wrong, for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            ConnectError::Kubeconfig { .. } => "kubeconfig_invalid",
            ConnectError::NoSecretRef { .. } => "no_secret_ref",
            ConnectError::Secret(error) => error.kind(),
            ConnectError::Client(_) => "client",
        }
    }
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
    ) -> Result<(Member, String), ConnectError> {
        match self {
            MemberCredentials::Kubeconfig(path) => {
                let kubeconfig =
                    Kubeconfig::read_from(path).map_err(|source| ConnectError::Kubeconfig {
                        path: path.clone(),
                        source: source.into(),
                    })?;
                let member = Member::from_kubeconfig(&kubeconfig, path, cluster).await?;
                Ok((member, String::new()))
            }
            MemberCredentials::HubSecrets(store) => {
                let secret = secret.ok_or_else(|| ConnectError::NoSecretRef {
                    cluster: cluster.to_string(),
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
                let mut member =
                    Member::from_kubeconfig(&loaded.kubeconfig, &origin, &context).await?;
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

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    use kube::api::ObjectMeta;

    use super::*;
    use crate::error::chain;

    /// A store that has listed one Secret, `members`, holding `data`.
    fn store_with(data: &[(&str, &str)]) -> SecretStore {
        let mut secrets = HashMap::new();
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some("members".into()),
                resource_version: Some("7".into()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(key, value)| (key.to_string(), ByteString(value.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        };
        store_secret(&mut secrets, secret);
        SecretStore {
            namespace: "hub-ns".into(),
            secrets: RwLock::new(secrets),
            changed: watch::channel(Some(1)).0,
        }
    }

    fn secret_ref(name: &str, key: &str) -> SecretKeyRef {
        SecretKeyRef {
            name: name.into(),
            key: key.into(),
        }
    }

    const KUBECONFIG: &str =
        "apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n";

    /// Each unusable Secret names itself, its key and the problem; none holds its contents; only
    /// a hub not listed yet is worth retrying without a change to the Secret.
    #[tokio::test]
    async fn a_secret_error_names_the_secret_the_key_and_the_problem() {
        let store = store_with(&[("kubeconfig", KUBECONFIG), ("other", "not: [yaml")]);
        let read = |name: &'static str, key: &'static str| {
            let store = &store;
            async move { store.kubeconfig(&secret_ref(name, key)).await }
        };
        let loaded = read("members", "").await.expect("the default key is read");
        assert_eq!(loaded.version, "7");

        let cases = [
            (
                read("absent", "").await,
                "Secret hub-ns/absent key kubeconfig: no such Secret in the hub",
                "secret_missing",
            ),
            (
                read("members", "nope").await,
                "Secret hub-ns/members key nope: the Secret has no such key",
                "secret_key_missing",
            ),
            (
                read("members", "other").await,
                "Secret hub-ns/members key other: not a valid kubeconfig (YAML error at line 1, column 6)",
                "kubeconfig_invalid",
            ),
        ];
        for (result, text, kind) in cases {
            let Err(error) = result else {
                panic!("{text}: read");
            };
            let shown = chain(&error);
            assert!(shown.starts_with(text), "{shown}");
            assert!(!shown.contains("[yaml"), "no Secret contents: {shown}");
            assert_eq!(error.kind(), kind);
            assert!(!error.is_retryable(), "{shown}");
            let connect = ConnectError::from(error);
            assert_eq!((connect.kind(), connect.is_retryable()), (kind, false));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn secrets_not_listed_yet_are_worth_retrying() {
        let store = SecretStore {
            namespace: "hub-ns".into(),
            secrets: RwLock::default(),
            changed: watch::channel(None).0,
        };
        let Err(error) = store.kubeconfig(&secret_ref("members", "")).await else {
            panic!("read before the first list");
        };
        assert_eq!(
            chain(&error),
            "Secret hub-ns/members key kubeconfig: the hub's Secrets could not be listed yet"
        );
        assert!(error.is_retryable());
        assert_eq!(error.kind(), "secrets_not_listed");
    }
}
