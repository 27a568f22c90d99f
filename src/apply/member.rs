//! One member cluster's API: a kube-rs client from a kubeconfig context, raw requests with
//! retries, and a discovery cache so any kind, custom resources included, can be addressed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::Value;
use tokio::sync::{Mutex, OnceCell};

use super::ApplyError;

/// How long one request may take before it counts as a connection failure.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Ask for metadata only, or plain JSON where the apiserver cannot transform.
const PARTIAL_METADATA: &str =
    "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json";
const PARTIAL_METADATA_LIST: &str =
    "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";

/// Retries of 429, 5xx and connection errors: 100 ms doubling to 2 s with jitter, 4 retries.
/// An apiserver that refuses connections is given up on after about 3 s; one that drops them
/// costs up to 5 connect timeouts.
fn retry_policy() -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(2))
        .with_max_times(4)
        .with_jitter()
}

/// A member cluster that Flotilla can talk to.
pub struct Member {
    /// The cluster's name in the fleet (and its kubeconfig context).
    pub name: String,
    client: kube::Client,
    /// Kinds served per `apiVersion`, filled on first use.
    discovery: Mutex<HashMap<String, Arc<ServedKinds>>>,
    /// Whether the apiserver needs the legacy apply forms, from its `/version` on first use.
    legacy_forms: OnceCell<bool>,
}

/// The first minor version of Kubernetes 1 that gets no legacy apply forms (see
/// [`super::prepare_body`]). 1.20 needs them (the compatibility lane shows it); 1.21 is not
/// tested here and gets them too, which it accepts as older clients sent them.
const FIRST_MINOR_WITHOUT_LEGACY_FORMS: u32 = 22;

/// The resources of one `apiVersion`, by kind.
#[derive(Debug, Default)]
pub struct ServedKinds {
    kinds: HashMap<String, Resource>,
}

/// How the API serves one kind.
#[derive(Debug, Clone)]
pub struct Resource {
    /// The plural resource name in URLs (`deployments`).
    pub plural: String,
    /// Whether objects of the kind live in a namespace.
    pub namespaced: bool,
}

/// An HTTP answer from an apiserver.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: StatusCode,
    /// The body, JSON for every API answer.
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The `message` of a `Status` answer, or the start of the body.
    pub fn message(&self) -> String {
        match self.json().get("message").and_then(Value::as_str) {
            Some(message) => message.to_string(),
            None => String::from_utf8_lossy(&self.body[..self.body.len().min(200)]).into_owned(),
        }
    }
}

/// A request that failed before the apiserver answered, or kept failing after retries.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// No answer: connection refused, reset or timed out.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The apiserver answered, but not with what was asked (discovery refused, say).
    #[error("{path}: {status}: {message}")]
    Refused {
        /// What was asked for.
        path: String,
        /// The answer's code.
        status: StatusCode,
        /// The answer's message.
        message: String,
    },
    /// The apiserver kept answering 429 or 5xx.
    #[error("{status}: {message}")]
    Overloaded {
        /// The last status code.
        status: StatusCode,
        /// The last message.
        message: String,
    },
}

impl RequestError {
    /// Whether asking again can help: no answer or an overloaded apiserver can pass, and so
    /// can a refusal other than a malformed or invalid request (credentials get rotated,
    /// RBAC granted, a namespace created).
    pub fn is_retryable(&self) -> bool {
        match self {
            RequestError::Unreachable(_) | RequestError::Overloaded { .. } => true,
            RequestError::Refused { status, .. } => super::is_retryable_status(*status),
        }
    }

    /// A fixed name for this error, fit for a metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            RequestError::Unreachable(_) => "unreachable",
            RequestError::Refused { .. } => "refused",
            RequestError::Overloaded { .. } => "overloaded",
        }
    }
}

impl Member {
    /// Connects to the context named `name` in the kubeconfig (the name of the cluster in the
    /// fleet is the name of its context).
    pub async fn from_kubeconfig(
        kubeconfig: &Kubeconfig,
        path: &Path,
        name: &str,
    ) -> Result<Self, ApplyError> {
        if !kubeconfig
            .contexts
            .iter()
            .any(|context| context.name == name)
        {
            return Err(ApplyError::NoContext {
                kubeconfig: path.to_path_buf(),
                cluster: name.to_string(),
            });
        }
        let options = KubeConfigOptions {
            context: Some(name.to_string()),
            ..KubeConfigOptions::default()
        };
        let client_error = |source: String| ApplyError::Client {
            kubeconfig: path.to_path_buf(),
            cluster: name.to_string(),
            problem: source,
        };
        let mut config = kube::Config::from_custom_kubeconfig(kubeconfig.clone(), &options)
            .await
            .map_err(|error| client_error(error.to_string()))?;
        config.read_timeout = Some(READ_TIMEOUT);
        config.connect_timeout = Some(CONNECT_TIMEOUT);
        let client = kube::Client::try_from(config).map_err(|e| client_error(e.to_string()))?;
        Ok(Member {
            name: name.to_string(),
            client,
            discovery: Mutex::default(),
            legacy_forms: OnceCell::new(),
        })
    }

    /// The kube client (for watches).
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// Sends one request, retrying 429, 5xx and connection errors with backoff. Any other
    /// answer, 4xx included, is returned for the caller to judge.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        content_type: Option<&str>,
        body: Option<&[u8]>,
    ) -> Result<Reply, RequestError> {
        self.send_accepting(
            method,
            path_and_query,
            content_type,
            body,
            "application/json",
        )
        .await
    }

    /// [`Member::send`] with another `Accept` header.
    async fn send_accepting(
        &self,
        method: Method,
        path_and_query: &str,
        content_type: Option<&str>,
        body: Option<&[u8]>,
        accept: &str,
    ) -> Result<Reply, RequestError> {
        let attempt = || async {
            let mut request = Request::builder()
                .method(method.clone())
                .uri(path_and_query);
            if let Some(content_type) = content_type {
                request = request.header(http::header::CONTENT_TYPE, content_type);
            }
            request = request.header(http::header::ACCEPT, accept);
            let request = request
                .body(kube::client::Body::from(body.unwrap_or_default().to_vec()))
                .map_err(|error| RequestError::Unreachable(error.to_string()))?;
            let response = self
                .client
                .send(request)
                .await
                .map_err(|error| RequestError::Unreachable(crate::error::chain(&error)))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect_bytes()
                .await
                .map_err(|error| RequestError::Unreachable(crate::error::chain(&error)))?;
            let reply = Reply { status, body };
            if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                return Err(RequestError::Overloaded {
                    status,
                    message: reply.message(),
                });
            }
            Ok(reply)
        };
        attempt
            .retry(retry_policy())
            .sleep(tokio::time::sleep)
            .notify(|error, delay| {
                tracing::debug!(cluster = %self.name, %error, ?delay, "retrying {method} {path_and_query}");
            })
            .await
    }

    /// A server-side apply PATCH to `path_and_query`.
    pub async fn apply_patch(
        &self,
        path_and_query: &str,
        body: &[u8],
    ) -> Result<Reply, RequestError> {
        self.send(
            Method::PATCH,
            path_and_query,
            Some("application/apply-patch+yaml"),
            Some(body),
        )
        .await
    }

    /// [`Member::apply_patch`] answered with the object's metadata only: the apiserver skips
    /// encoding the whole object, which is much of its work on a sync.
    pub async fn apply_patch_for_metadata(
        &self,
        path_and_query: &str,
        body: &[u8],
    ) -> Result<Reply, RequestError> {
        self.send_accepting(
            Method::PATCH,
            path_and_query,
            Some("application/apply-patch+yaml"),
            Some(body),
            PARTIAL_METADATA,
        )
        .await
    }

    /// Lists a collection as metadata only (names, uids, labels); `Ok(None)` for 404.
    pub async fn list_metadata(&self, path: &str) -> Result<Option<Reply>, RequestError> {
        let reply = self
            .send_accepting(Method::GET, path, None, None, PARTIAL_METADATA_LIST)
            .await?;
        Ok((reply.status != StatusCode::NOT_FOUND).then_some(reply))
    }

    /// GETs a path; `Ok(None)` for 404.
    pub async fn get(&self, path: &str) -> Result<Option<Reply>, RequestError> {
        let reply = self.send(Method::GET, path, None, None).await?;
        Ok((reply.status != StatusCode::NOT_FOUND).then_some(reply))
    }

    /// Whether this apiserver needs the legacy apply forms (Kubernetes before 1.22), asked
    /// once per connection from `/version`.
    pub async fn needs_legacy_forms(&self) -> Result<bool, RequestError> {
        self.legacy_forms
            .get_or_try_init(|| async {
                let path = "/version";
                match self.get(path).await? {
                    Some(reply) if reply.status.is_success() => {
                        Ok(is_before_first_minor_without_legacy_forms(&reply.json()))
                    }
                    Some(reply) => Err(RequestError::Refused {
                        path: path.into(),
                        status: reply.status,
                        message: reply.message(),
                    }),
                    None => Err(RequestError::Refused {
                        path: path.into(),
                        status: StatusCode::NOT_FOUND,
                        message: "no version served".into(),
                    }),
                }
            })
            .await
            .copied()
    }

    /// How the API serves `kind` of `api_version`, from the discovery cache or the apiserver.
    /// `Ok(None)` when the version or kind is not served (yet).
    pub async fn resource(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<Option<Resource>, RequestError> {
        let mut cache = self.discovery.lock().await;
        if let Some(served) = cache.get(api_version) {
            if let Some(resource) = served.kinds.get(kind) {
                return Ok(Some(resource.clone()));
            }
        }
        // Not cached, or cached before its CRD was established: ask again.
        let path = if api_version.contains('/') {
            format!("/apis/{api_version}")
        } else {
            format!("/api/{api_version}")
        };
        let served = match self.get(&path).await? {
            Some(reply) if reply.status.is_success() => parse_resource_list(&reply.json()),
            // 404: the version is not served (yet).
            None => ServedKinds::default(),
            // Anything else (403, say) is not an answer about the API: never cache it.
            Some(reply) => {
                return Err(RequestError::Refused {
                    path,
                    status: reply.status,
                    message: reply.message(),
                });
            }
        };
        let resource = served.kinds.get(kind).cloned();
        cache.insert(api_version.to_string(), Arc::new(served));
        Ok(resource)
    }
}

/// Reads `/version`'s `major` and `minor` (`"20"`, or `"20+"` as some distributions say); a
/// version that cannot be read is taken as current.
fn is_before_first_minor_without_legacy_forms(version: &Value) -> bool {
    let number = |field: &str| -> Option<u32> {
        let text = version.get(field)?.as_str()?;
        text.trim_end_matches('+').parse().ok()
    };
    matches!((number("major"), number("minor")), (Some(1), Some(minor)) if minor < FIRST_MINOR_WITHOUT_LEGACY_FORMS)
}

fn parse_resource_list(list: &Value) -> ServedKinds {
    let mut kinds = HashMap::new();
    for resource in list
        .get("resources")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(plural), Some(kind)) = (
            resource.get("name").and_then(Value::as_str),
            resource.get("kind").and_then(Value::as_str),
        ) else {
            continue;
        };
        // `deployments/status` and the like are subresources, not kinds.
        if plural.contains('/') {
            continue;
        }
        kinds.insert(
            kind.to_string(),
            Resource {
                plural: plural.to_string(),
                namespaced: resource
                    .get("namespaced")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            },
        );
    }
    ServedKinds { kinds }
}

/// Connects to every named cluster of a kubeconfig file. A cluster that cannot be connected to
/// (no context, bad credentials) gets its error; the others are unaffected.
pub async fn connect_all(
    kubeconfig_path: &Path,
    names: &[String],
) -> Result<Vec<(String, Result<Member, ApplyError>)>, ApplyError> {
    let kubeconfig =
        Kubeconfig::read_from(kubeconfig_path).map_err(|error| ApplyError::Kubeconfig {
            path: PathBuf::from(kubeconfig_path),
            problem: error.to_string(),
        })?;
    let mut members = Vec::with_capacity(names.len());
    for name in names {
        members.push((
            name.clone(),
            Member::from_kubeconfig(&kubeconfig, kubeconfig_path, name).await,
        ));
    }
    Ok(members)
}

/// The URL path of a kind's collection: `/apis/apps/v1/namespaces/web/deployments`.
pub fn collection_path(api_version: &str, resource: &Resource, namespace: &str) -> String {
    let prefix = if api_version.contains('/') {
        format!("/apis/{api_version}")
    } else {
        format!("/api/{api_version}")
    };
    if resource.namespaced && !namespace.is_empty() {
        format!("{prefix}/namespaces/{namespace}/{}", resource.plural)
    } else {
        format!("{prefix}/{}", resource.plural)
    }
}

#[cfg(test)]
mod version_tests {
    use serde_json::json;

    use super::is_before_first_minor_without_legacy_forms as legacy;

    #[test]
    fn legacy_apply_forms_go_only_to_apiservers_before_1_22() {
        assert!(legacy(
            &json!({"major": "1", "minor": "20", "gitVersion": "v1.20.2"})
        ));
        assert!(legacy(&json!({"major": "1", "minor": "21+"})));
        assert!(!legacy(&json!({"major": "1", "minor": "22"})));
        assert!(!legacy(&json!({"major": "1", "minor": "37"})));
        // Unreadable: current.
        assert!(!legacy(&json!({"gitVersion": "v1.37.2"})));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use backon::BackoffBuilder;

    use super::*;

    #[test]
    fn retries_wait_100_ms_doubling_with_jitter_four_times() {
        let delays: Vec<Duration> = retry_policy().build().collect();
        assert_eq!(delays.len(), 4, "{delays:?}");
        for (delay, base_ms) in delays.iter().zip([100, 200, 400, 800]) {
            let base = Duration::from_millis(base_ms);
            // Jitter adds up to the delay again, never less than it.
            assert!(
                (base..base * 2).contains(delay),
                "{delay:?} not in {base:?}..{:?}",
                base * 2
            );
        }
    }

    /// A request that keeps failing is sent five times, and given up on within 3 s.
    #[tokio::test(start_paused = true)]
    async fn a_failing_request_is_tried_five_times_then_given_up() {
        let attempts = AtomicU32::new(0);
        let start = tokio::time::Instant::now();
        let attempt = || async {
            attempts.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(RequestError::Unreachable("connection refused".to_string()))
        };
        let result = attempt
            .retry(retry_policy())
            .sleep(tokio::time::sleep)
            .await;
        assert!(matches!(result, Err(RequestError::Unreachable(_))));
        assert_eq!(attempts.load(Ordering::SeqCst), 5);
        let waited = start.elapsed();
        assert!(
            (Duration::from_millis(1_500)..Duration::from_secs(3)).contains(&waited),
            "{waited:?}"
        );
    }
}
