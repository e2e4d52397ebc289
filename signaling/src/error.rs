//! The one error type of hush-signaling, phrased for the account status line.

/// What went wrong talking to a server.
#[derive(Debug, thiserror::Error)]
pub enum SignalingError {
    /// The server rejected the username/password. Never retried automatically.
    #[error("wrong username or password")]
    AuthFailed,
    /// The server's certificate is not trusted (or not the pinned one). Never retried.
    #[error("the server's certificate is not trusted: {0}")]
    UntrustedCertificate(String),
    /// The server does not offer TLS; we never fall back to cleartext.
    #[error("the server does not offer TLS; refusing to continue unencrypted")]
    NoTls,
    /// In-band registration: the name is already in use.
    #[error("that username is already taken")]
    UsernameTaken,
    /// In-band registration or password change is switched off on this server.
    #[error("this server does not allow creating accounts or changing passwords from the app")]
    RegistrationNotAllowed,
    /// The server refused a value (e.g. a password too weak), with its own words.
    #[error("the server refused: {0}")]
    Refused(String),
    /// A JID, address or setting is malformed.
    #[error("{0}")]
    InvalidInput(String),
    /// Could not reach the server (DNS, TCP, proxy); worth retrying later.
    #[error("cannot reach the server: {0}")]
    Unreachable(String),
    /// The server hung up or spoke nonsense.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// No answer within the deadline.
    #[error("the server did not answer in time")]
    Timeout,
}

impl SignalingError {
    /// Errors the user must fix; reconnecting would only repeat them.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            SignalingError::AuthFailed
                | SignalingError::UntrustedCertificate(_)
                | SignalingError::NoTls
                | SignalingError::InvalidInput(_)
        )
    }
}
