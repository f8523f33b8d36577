//! The crate's error type.
//!
//! Every fallible function in the Rust API returns [`Result`]. Each error carries a message
//! that names the argument, field, file or value at fault; [`Error::kind`] classifies it so
//! the C ABI can map it to a stable `dsrs_status` code.

use std::path::PathBuf;

/// A convenient alias for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The broad class of an [`Error`]; one C status code per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// An argument has an invalid value (wrong alignment, negative dimension, ...).
    InvalidArgument,
    /// An index, size, offset or enumeration value is outside its valid range.
    OutOfRange,
    /// The operation is not valid in the object's current state.
    InvalidState,
    /// A JSON document could not be parsed.
    InvalidJson,
    /// A configuration or options document is well-formed JSON but invalid.
    InvalidConfig,
    /// A file could not be read or written.
    Io,
    /// Serialized data (an RNG state, a file) is corrupt or has the wrong format.
    Format,
    /// No accelerator of this name exists.
    UnknownAccelerator,
    /// The accelerator (or a library it needs) is not available on this machine.
    Unavailable,
    /// An allocation failed or a memory limit was reached.
    OutOfMemory,
    /// The operation or data type is not supported by this accelerator.
    Unsupported,
    /// A device or driver call failed.
    Device,
    /// An accelerator plugin could not be loaded or failed validation (not a shared
    /// library, no entry symbol, another plugin ABI version, a required entry missing).
    PluginInvalid,
    /// An op failed to compile (the message has the command, the compiler's first lines
    /// and the full log's path).
    BuildFailed,
    /// An op cannot be built or loaded on this machine (no compiler, no NVRTC, ...).
    Incompatible,
    /// No op has this name.
    UnknownOp,
    /// A built op could not be loaded (dlopen failed, wrong op ABI, missing symbol).
    LoadFailed,
    /// The op cache directory is not private to this user.
    UnsafeCache,
    /// A built op does not export the symbol asked for.
    SymbolNotFound,
    /// Waiting for another process's build of the same op timed out.
    LockTimeout,
    /// An internal invariant was violated (a bug in deepspeed_rs).
    Internal,
}

/// An error from deepspeed_rs. The `Display` text is complete and meant for users.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// See [`ErrorKind::InvalidArgument`].
    #[error("{0}")]
    InvalidArgument(String),
    /// See [`ErrorKind::OutOfRange`].
    #[error("{0}")]
    OutOfRange(String),
    /// See [`ErrorKind::InvalidState`].
    #[error("{0}")]
    InvalidState(String),
    /// See [`ErrorKind::InvalidJson`].
    #[error("invalid JSON in {what}: {source}")]
    Json {
        /// What was being parsed ("accelerator options", a file name, ...).
        what: String,
        /// The parser's error, with line and column.
        #[source]
        source: serde_json::Error,
    },
    /// See [`ErrorKind::InvalidConfig`].
    #[error("{0}")]
    Config(String),
    /// See [`ErrorKind::Io`].
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// See [`ErrorKind::Format`].
    #[error("{0}")]
    Format(String),
    /// See [`ErrorKind::UnknownAccelerator`].
    #[error("{origin} is not a known accelerator; valid accelerators: {}", valid.join(", "))]
    UnknownAccelerator {
        /// The name asked for.
        name: String,
        /// Where the name came from, with the name: `DSRS_ACCELERATOR="x"`,
        /// `accelerator name "x"`.
        origin: String,
        /// Every accelerator name this build knows.
        valid: Vec<String>,
    },
    /// See [`ErrorKind::Unavailable`].
    #[error("{name} unavailable: {reason}")]
    Unavailable {
        /// The accelerator or library that is unavailable.
        name: String,
        /// Why.
        reason: String,
    },
    /// See [`ErrorKind::OutOfMemory`].
    #[error("{0}")]
    OutOfMemory(String),
    /// See [`ErrorKind::Unsupported`].
    #[error("{0}")]
    Unsupported(String),
    /// See [`ErrorKind::Device`].
    #[error("{0}")]
    Device(String),
    /// See [`ErrorKind::PluginInvalid`].
    #[error("{0}")]
    PluginInvalid(String),
    /// See [`ErrorKind::BuildFailed`].
    #[error("{0}")]
    BuildFailed(String),
    /// See [`ErrorKind::Incompatible`].
    #[error("op '{op}' is not compatible with this machine: {}", reasons.join("; "))]
    Incompatible {
        /// The op.
        op: String,
        /// Every reason, each a full sentence naming what is missing.
        reasons: Vec<String>,
    },
    /// See [`ErrorKind::UnknownOp`].
    #[error("no op is named '{name}'; known ops: {}", known.join(", "))]
    UnknownOp {
        /// The name asked for.
        name: String,
        /// Every registered op.
        known: Vec<String>,
    },
    /// See [`ErrorKind::LoadFailed`].
    #[error("{0}")]
    LoadFailed(String),
    /// See [`ErrorKind::UnsafeCache`].
    #[error("{0}")]
    UnsafeCache(String),
    /// See [`ErrorKind::SymbolNotFound`].
    #[error("op '{op}' has no symbol '{symbol}'{hint}")]
    SymbolNotFound {
        /// The op.
        op: String,
        /// The symbol asked for.
        symbol: String,
        /// Extra help: the symbols it declares.
        hint: String,
    },
    /// See [`ErrorKind::LockTimeout`].
    #[error("{0}")]
    LockTimeout(String),
    /// See [`ErrorKind::Internal`].
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::OutOfRange(_) => ErrorKind::OutOfRange,
            Error::InvalidState(_) => ErrorKind::InvalidState,
            Error::Json { .. } => ErrorKind::InvalidJson,
            Error::Config(_) => ErrorKind::InvalidConfig,
            Error::Io { .. } => ErrorKind::Io,
            Error::Format(_) => ErrorKind::Format,
            Error::UnknownAccelerator { .. } => ErrorKind::UnknownAccelerator,
            Error::Unavailable { .. } => ErrorKind::Unavailable,
            Error::OutOfMemory(_) => ErrorKind::OutOfMemory,
            Error::Unsupported(_) => ErrorKind::Unsupported,
            Error::Device(_) => ErrorKind::Device,
            Error::PluginInvalid(_) => ErrorKind::PluginInvalid,
            Error::BuildFailed(_) => ErrorKind::BuildFailed,
            Error::Incompatible { .. } => ErrorKind::Incompatible,
            Error::UnknownOp { .. } => ErrorKind::UnknownOp,
            Error::LoadFailed(_) => ErrorKind::LoadFailed,
            Error::UnsafeCache(_) => ErrorKind::UnsafeCache,
            Error::SymbolNotFound { .. } => ErrorKind::SymbolNotFound,
            Error::LockTimeout(_) => ErrorKind::LockTimeout,
            Error::Internal(_) => ErrorKind::Internal,
        }
    }

    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }

    /// Shorthand for [`Error::OutOfRange`].
    pub fn range(msg: impl Into<String>) -> Self {
        Error::OutOfRange(msg.into())
    }

    /// Shorthand for [`Error::Config`].
    pub fn config(msg: impl Into<String>) -> Self {
        Error::Config(msg.into())
    }

    /// Shorthand for [`Error::Unavailable`].
    pub fn unavailable(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Unavailable {
            name: name.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// An error's message with the messages of its sources, `outer: inner: ...` (libloading's
/// own message is only "dlopen failed"; dlerror's reason is its source).
pub(crate) fn with_sources(e: &dyn std::error::Error) -> String {
    let mut why = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        why = format!("{why}: {s}");
        source = s.source();
    }
    why
}
