//! Turns tokio-xmpp's errors into the few cases a user can act on.

use crate::SignalingError;
use tokio_rustls::rustls;
use tokio_xmpp::error::{AuthError, Error, ProtocolError};

pub(crate) fn classify(e: Error) -> SignalingError {
    match e {
        Error::Auth(AuthError::Fail(_)) => SignalingError::AuthFailed,
        Error::Auth(other) => SignalingError::Protocol(format!("authentication: {other}")),
        Error::Protocol(ProtocolError::NoTls) => SignalingError::NoTls,
        Error::StreamError(e) => {
            let text =
                e.0.texts
                    .values()
                    .next()
                    .map(|t| super::scram::printable(t));
            super::login::stream_failure(&e.0.condition, text)
        }
        Error::Io(io) => {
            if let Some(tls) = io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            {
                return match tls {
                    rustls::Error::InvalidCertificate(c) => {
                        SignalingError::UntrustedCertificate(format!("{c:?}"))
                    }
                    other => SignalingError::Protocol(format!("TLS: {other}")),
                };
            }
            match io.kind() {
                std::io::ErrorKind::TimedOut => SignalingError::Timeout,
                std::io::ErrorKind::InvalidInput => SignalingError::InvalidInput(io.to_string()),
                _ => SignalingError::Unreachable(io.to_string()),
            }
        }
        Error::Disconnected => SignalingError::Protocol("the server closed the connection".into()),
        other => SignalingError::Unreachable(other.to_string()),
    }
}
