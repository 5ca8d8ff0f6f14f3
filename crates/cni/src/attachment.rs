//! Who an attachment is: the types both sides of the protocol share. The plugin side
//! ([`crate::skel`]) decodes GC's `cni.dev/valid-attachments` into [`Attachment`]s; the runtime
//! side ([`crate::runtime`], [`crate::cache`]) sends them and keeps each attachment's
//! [`RuntimeConf`]. Living here, neither side imports the other, and `cache` and `runtime` do
//! not import each other.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One attachment in a GC request (`cni.dev/valid-attachments`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attachment {
    /// Container ID.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// Interface name.
    #[serde(rename = "ifname")]
    pub ifname: String,
}

/// Per-attachment runtime parameters (libcni's `RuntimeConf`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RuntimeConf {
    /// Container ID.
    pub container_id: String,
    /// Netns path.
    pub netns: String,
    /// Interface name in the container.
    pub ifname: String,
    /// CNI_ARGS pairs.
    pub args: Vec<(String, String)>,
    /// Capability arguments (e.g. `portMappings`), injected as `runtimeConfig` when a plugin
    /// declares the capability.
    pub capability_args: Map<String, Value>,
}
