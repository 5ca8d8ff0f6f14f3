//! `portmap` plugin.
