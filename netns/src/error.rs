//! The CLI's error type: every error carries the exit code class it maps to and a message that
//! says what is wrong and what to do.

use crate::cli::exit;

/// A failure of a `netns` command.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// Bad option or value (exit 2); nothing was changed.
    #[error("{0}")]
    Usage(String),
    /// A namespace, network or attachment does not exist (exit 3).
    #[error("{0}")]
    NotFound(String),
    /// The operation ran and failed (exit 1).
    #[error("{0}")]
    Failed(String),
}

impl Error {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => exit::USAGE,
            Error::NotFound(_) => exit::NOT_FOUND,
            Error::Failed(_) => exit::FAILED,
        }
    }
}

/// Render a CNI error from a plugin or from libcni-style validation.
pub fn cni(what: &str, e: &cni::CniError) -> Error {
    let mut s = format!("{what}: {} (CNI error code {})", e.msg, e.code);
    if !e.details.is_empty() {
        s.push_str(&format!(": {}", e.details));
    }
    Error::Failed(s)
}

/// Render a kernel-layer error.
pub fn kernel(e: &kernel::Error) -> Error {
    if e.is_not_found() {
        Error::NotFound(e.to_string())
    } else {
        Error::Failed(e.to_string())
    }
}

/// Shorthand.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_cni_rendering() {
        assert_eq!(Error::Usage("x".into()).exit_code(), 2);
        assert_eq!(Error::NotFound("x".into()).exit_code(), 3);
        assert_eq!(Error::Failed("x".into()).exit_code(), 1);
        let e = cni::CniError::new(7, "bad").with_details("more");
        assert_eq!(
            cni("ADD failed", &e),
            Error::Failed("ADD failed: bad (CNI error code 7): more".into())
        );
    }
}
