//! host-local IPAM: file-locked allocator, drop-in compatible with the reference data directory.
