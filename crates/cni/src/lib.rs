//! CNI protocol: config and result types for every spec version, errors, CNI_ARGS, the plugin
//! skeleton, delegation, and the runtime side (conflist execution, result cache).
