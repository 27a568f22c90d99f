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
