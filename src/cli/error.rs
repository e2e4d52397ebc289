//! The CLI's one error type.

use hush_core::CoreError;

/// Errors the CLI reports; the message is what the user sees.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error("{0}")]
    Usage(String),
    #[error("cannot read {what}: {source}")]
    Input {
        what: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Ui(#[from] hush_ui::UiError),
}
