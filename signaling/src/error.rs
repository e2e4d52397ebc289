//! The one error type of hush-signaling, phrased for the account status line.

/// What went wrong talking to a server.
#[derive(Debug, thiserror::Error)]
pub enum SignalingError {
    /// The server rejected the username/password. Never retried automatically.
    #[error("wrong username or password")]
    AuthFailed,
    /// The server refused a login bound to this TLS connection (SCRAM `-PLUS`). Never
    /// retried without the binding: an interceptor of TLS would cause exactly this.
    #[error(
        "the server refused to tie this login to the TLS connection ({0}); either it cannot \
         check the binding it offered, or something between you and it is intercepting \
         TLS. Hushphone does not retry without the binding"
    )]
    LoginBinding(String),
    /// The server offers no login method we support.
    #[error("the server offers no login method Hushphone supports (it offers: {0})")]
    LoginMechanism(String),
    /// Too many attempts: the server refuses logins for a while. Not retried at once.
    #[error("the server is refusing logins for now after too many attempts: {0}")]
    LoginRateLimited(String),
    /// The server's rules refuse this account or address (disabled, expired, denied).
    #[error("the server refused the login by its policy: {0}")]
    LoginPolicy(String),
    /// The server refused the login for a reason other than the password (its words or
    /// SASL condition). Not retried.
    #[error("the server refused the login: {0}")]
    LoginRefused(String),
    /// The server's side of the login cannot be trusted (it failed to prove it knows the
    /// password, or asked for something that would weaken it). Never retried.
    #[error("refusing to log in: {0}")]
    LoginUnsafe(String),
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
    /// 491: the peer was renegotiating the call at the same moment (glare); try again
    /// after a pause.
    #[error("the peer was renegotiating the call at the same moment (491)")]
    RequestPending,
}

impl SignalingError {
    /// Errors the user must fix; reconnecting would only repeat them.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            SignalingError::AuthFailed
                | SignalingError::LoginBinding(_)
                | SignalingError::LoginMechanism(_)
                | SignalingError::LoginRateLimited(_)
                | SignalingError::LoginPolicy(_)
                | SignalingError::LoginUnsafe(_)
                | SignalingError::LoginRefused(_)
                | SignalingError::UntrustedCertificate(_)
                | SignalingError::NoTls
                | SignalingError::InvalidInput(_)
        )
    }
}
