//! The one error type of sr-core and of every stage.
//!
//! It mirrors [`sr_abi::FfiError`] field for field (code, message, help), so an error crosses
//! the plugin boundary and comes back unchanged. Messages name the file, key or layer; `help`
//! says how to fix it.

use sr_abi::{ErrorCode, FfiError};
use std::fmt;

/// Result alias used throughout sr-core and the stages.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error with a machine-readable code, a message naming the culprit and an optional fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
    pub help: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if !self.help.is_empty() {
            write!(f, "\n  help: {}", self.help)?;
        }
        Ok(())
    }
}

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
            help: String::new(),
        }
    }
    /// A stage parameter is missing, unknown or invalid.
    pub fn params(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidParams, message)
    }
    /// The data given to a stage is not what it expects.
    pub fn input(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidInput, message)
    }
    /// The request is valid but not supported by this stage.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unsupported, message)
    }
    /// A file could not be read or written; `path` is named in the message.
    pub fn io(path: impl AsRef<std::path::Path>, err: impl fmt::Display) -> Self {
        Self::new(ErrorCode::Io, format!("{}: {err}", path.as_ref().display()))
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = help.into();
        self
    }
    /// Prefix the message with where it happened (a stage, an image, a layer).
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

impl From<Error> for FfiError {
    fn from(e: Error) -> FfiError {
        FfiError::new(e.code, e.message, e.help)
    }
}

impl From<FfiError> for Error {
    fn from(e: FfiError) -> Error {
        match e.code.as_enum() {
            Ok(code) => Error {
                code: *code,
                message: e.message.into(),
                help: e.help.into(),
            },
            // A newer plugin sent a code this host does not know: keep the text.
            Err(_) => Error {
                code: ErrorCode::Internal,
                message: format!("{} (error code unknown to this srhost)", e.message),
                help: e.help.into(),
            },
        }
    }
}

/// The text of a caught panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-text payload".to_string()
    }
}

/// Run `f`, turning a panic into an [`ErrorCode::Panic`] error that names `what`.
/// Every call that crosses the plugin boundary goes through this.
pub fn catch_panic<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => Err(Error::new(
            ErrorCode::Panic,
            format!("{what} panicked: {}", panic_message(payload.as_ref())),
        )
        .with_help("this is a bug in the stage; the image was skipped and the run went on")),
    }
}
