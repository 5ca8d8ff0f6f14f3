//! host-local IPAM: a file-locked address allocator, drop-in compatible with the reference
//! plugin's data directory, plus GC and STATUS of spec 1.1.
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

/// The string that identifies a `host-local` binary of this build epoch, so a plugin that links
/// this crate can run it in process instead of exec'ing it (`cni::delegate::register_builtin`).
/// Bump the epoch whenever the plugin's observable behaviour changes: binaries of another epoch
/// are then exec'd, never imitated. A macro so the binary's about text can embed it (concat!).
#[macro_export]
macro_rules! builtin_marker {
    () => {
        "rcni-builtin host-local epoch 1"
    };
}

/// See [`builtin_marker`].
pub const BUILTIN_MARKER: &str = builtin_marker!();
