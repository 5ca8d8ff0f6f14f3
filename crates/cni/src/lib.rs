//! CNI protocol: config and result types for every spec version, errors, CNI_ARGS, the plugin
//! skeleton, delegation, and the runtime side (conflist execution, result cache).

pub mod args;
pub mod attachment;
pub mod cache;
pub mod config;
pub mod delegate;
pub mod error;
pub mod exec;
pub mod gojson;
pub mod result;
pub mod runtime;
pub mod skel;
pub mod trace;
pub mod version;

pub use args::CniArgs;
pub use attachment::{Attachment, RuntimeConf};
pub use config::{validate_ifname, validate_name, IpamConf, NetConf, NetConfList, PortMapping};
pub use error::{codes, CniError};
pub use result::{CniResult, Dns, Interface, IpConfig, Route};
pub use runtime::CniConfig;
pub use skel::{run, run_with, CmdArgs, Command, NetnsPolicy, Plugin};
pub use version::{negotiate, Version, CURRENT, SUPPORTED_VERSIONS};
