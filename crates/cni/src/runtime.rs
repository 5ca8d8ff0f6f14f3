//! The runtime side (libcni-compatible): conflist loading and execution, result cache.
