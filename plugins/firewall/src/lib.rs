//! `firewall` plugin.
