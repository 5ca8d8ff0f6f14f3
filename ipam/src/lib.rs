//! host-local IPAM: a file-locked address allocator, drop-in compatible with the reference
//! plugin's data directory (reference §2.4), plus GC and STATUS of spec 1.1.
//!
//! Layers: [`config`] merges and validates the configuration and requested addresses,
//! [`range`] holds range arithmetic and the round-robin cursor, [`store`] owns the on-disk
//! lease layout and its atomic writes, [`index`] caches lease owners so a call does not read
//! every lease, [`alloc`] implements the verbs on top of them, and
//! [`plugin`] maps CNI calls onto the verbs.

pub mod alloc;
pub mod config;
pub mod error;
pub mod index;
pub mod plugin;
pub mod range;
pub mod resolv;
pub mod store;

pub use error::{ConfigError, Error};
