//! sandboxd: a daemon modelling libnetwork's CNM objects (network, endpoint, sandbox) on top of
//! our CNI plugins. HTTP/1.1 + JSON on a unix socket ([`http`]), one owner of
//! the state ([`owner`]), plugin work off the owner ([`cniops`]), durable intent records
//! ([`store`]) and a reconcile that finishes or undoes whatever a crash interrupted.

pub mod cniops;
pub mod daemon;
pub mod dns;
pub mod docker;
pub mod error;
pub mod etcfiles;
pub mod http;
pub mod model;
pub mod overlay;
pub mod owner;
pub mod store;
pub mod util;

pub use error::{ApiError, Error};
