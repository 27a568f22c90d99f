//! Everything the agent says to clusters other than applying objects: the hub it runs in and
//! the member clusters it syncs.
//!
//! | part | what it does | talks to |
//! |---|---|---|
//! | [`hub`] | the hub client; member credentials, from a kubeconfig file or the hub's Secrets | hub |
//! | [`lease`] | shares member clusters between agent replicas with Leases | hub |
//! | [`health`] | probes each member's `/readyz` into Ready / NotReady | members |
//! | [`capacity`] | sums each member's Nodes and Pods as Karmada's resource summary | members |
//! | [`watch`] | watches the objects Flotilla manages, for drift and workload health | members |
//!
//! Applying objects is [`crate::apply`]'s; what counts as drift is [`crate::drift`]'s.

pub mod capacity;
pub mod health;
pub mod hub;
pub mod lease;
pub mod watch;

/// An error and its causes on one line, joined by `: `, for `/status`, Events and logs: the
/// errors here keep their context in the message and the cause in `source()`. A cause whose
/// text its error already quotes (kube's errors do) is not repeated.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
