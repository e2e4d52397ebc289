//! XMPP over tokio-xmpp: a TLS-only connector with pinning and SOCKS5, in-band
//! registration (XEP-0077) and a credential check that stops on a wrong password
//! instead of retrying forever.

pub mod account;
pub mod chat;
mod classify;
mod connector;
mod end_point;
mod login;
mod register;
mod scram;
mod socks5;
mod stream;
mod tls;

pub use connector::{HushConnector, Route};
pub use login::LoginSecurity;
pub use register::{change_password, register_account, verify_login};
pub use tls::{Trust, cert_fingerprint_from_pem, format_fingerprint, parse_fingerprint};

pub use tokio_xmpp::jid::BareJid;
