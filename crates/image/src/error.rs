//! Errors of the image store.

use std::path::PathBuf;

/// Why an image operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// No image has this name or digest.
    #[error("no image `{name}` (see `agentbox image ls`)")]
    NotFound { name: String },
    /// A digest prefix matches more than one image.
    #[error("`{prefix}` matches several images ({matches}); give more digits")]
    Ambiguous { prefix: String, matches: String },
    /// Bad input: a malformed or hostile archive, a digest mismatch, a bad name, suite or package.
    #[error("invalid {what}: {why}")]
    Invalid { what: String, why: String },
    /// A required tool is not installed.
    #[error("{tool} is not installed (fix: {fix})")]
    Missing { tool: String, fix: String },
    /// An external step failed (debootstrap).
    #[error("{step} failed: {message}")]
    Failed { step: String, message: String },
    /// A file operation in the store failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ImageError {
    /// True when the caller's input is at fault (unknown image, malformed archive, bad name).
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            ImageError::NotFound { .. } | ImageError::Ambiguous { .. } | ImageError::Invalid { .. }
        )
    }

    pub(crate) fn invalid(what: impl Into<String>, why: impl Into<String>) -> Self {
        ImageError::Invalid {
            what: what.into(),
            why: why.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| ImageError::Io { path, source }
    }
}
