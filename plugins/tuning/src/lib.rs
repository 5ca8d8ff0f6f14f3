//! `tuning` plugin.
