//! Errors: [`ApiError`] is what a request fails with (one variant per HTTP status class, mapped in
//! one place, [`ApiError::status`]); [`Error`] is what start-up and the store fail with.

use std::path::PathBuf;

/// A request's failure, carried back to the HTTP layer as `{"message": …}` with a status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 400: malformed or invalid input, or an unsupported combination.
    #[error("{0}")]
    BadRequest(String),
    /// 404: unknown network, sandbox or endpoint.
    #[error("{0}")]
    NotFound(String),
    /// 409: the request conflicts with the current state (duplicate, in use, in progress).
    #[error("{0}")]
    Conflict(String),
    /// 500: a plugin or the kernel failed unexpectedly, or a bug.
    #[error("{0}")]
    Internal(String),
    /// 503: the daemon is shutting down.
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    /// The HTTP status code of this error: the only place the mapping lives.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::NotFound(_) => 404,
            ApiError::Conflict(_) => 409,
            ApiError::Internal(_) => 500,
            ApiError::Unavailable(_) => 503,
        }
    }

    /// The message carried in the body.
    pub fn message(&self) -> &str {
        match self {
            ApiError::BadRequest(m)
            | ApiError::NotFound(m)
            | ApiError::Conflict(m)
            | ApiError::Internal(m)
            | ApiError::Unavailable(m) => m,
        }
    }
}

/// Shorthand for a 400.
pub fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::BadRequest(msg.into())
}

/// Shorthand for a 409.
pub fn conflict(msg: impl Into<String>) -> ApiError {
    ApiError::Conflict(msg.into())
}

/// Shorthand for a 404.
pub fn not_found(msg: impl Into<String>) -> ApiError {
    ApiError::NotFound(msg.into())
}

/// Daemon-level failures (start-up, persistence).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file-system operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A state file could not be decoded.
    #[error("decoding state file {path}: {source}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// Another daemon already uses the data directory.
    #[error("another sandboxd already uses data directory {0} (lock held)")]
    Locked(PathBuf),
    /// The kernel refused something at start-up.
    #[error("{0}")]
    Kernel(String),
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            what,
            path: path.into(),
            source,
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        ApiError::Internal(e.to_string())
    }
}
