//! Either XMPP server the tests run against, behind one face, so that every chat and OTR
//! suite runs against both: Prosody (what the project started with) and ejabberd (what
//! many public services run).

use crate::{Ejabberd, Prosody, Result};
use std::path::PathBuf;

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    /// Prosody 0.12.
    Prosody,
    /// ejabberd 23.01.
    Ejabberd,
}

/// A running XMPP server of either kind.
pub enum XmppServer {
    /// Prosody.
    Prosody(Prosody),
    /// ejabberd.
    Ejabberd(Ejabberd),
}

impl XmppServer {
    /// Starts a server of `kind` and waits until it accepts connections.
    pub fn start(kind: ServerKind) -> Result<XmppServer> {
        Ok(match kind {
            ServerKind::Prosody => XmppServer::Prosody(Prosody::start()?),
            ServerKind::Ejabberd => XmppServer::Ejabberd(Ejabberd::start()?),
        })
    }

    /// Which server this is.
    pub fn kind(&self) -> ServerKind {
        match self {
            XmppServer::Prosody(_) => ServerKind::Prosody,
            XmppServer::Ejabberd(_) => ServerKind::Ejabberd,
        }
    }

    /// The client-to-server port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        match self {
            XmppServer::Prosody(s) => s.port(),
            XmppServer::Ejabberd(s) => s.port(),
        }
    }

    /// The XMPP domain served.
    pub fn domain(&self) -> &'static str {
        "localhost"
    }

    /// The server's certificate (PEM), for pinning.
    pub fn cert_path(&self) -> PathBuf {
        match self {
            XmppServer::Prosody(s) => s.cert_path(),
            XmppServer::Ejabberd(s) => s.cert_path(),
        }
    }

    /// Everything the server stored.
    pub fn stored_bytes(&self) -> Vec<u8> {
        match self {
            XmppServer::Prosody(s) => s.stored_bytes(),
            XmppServer::Ejabberd(s) => s.stored_bytes(),
        }
    }

    /// Kills it hard; its data survives for a restart.
    pub fn kill(&mut self) {
        match self {
            XmppServer::Prosody(s) => s.kill(),
            XmppServer::Ejabberd(s) => s.kill(),
        }
    }

    /// Takes it down with its data kept for a restart: Prosody is killed hard (a crash);
    /// ejabberd is stopped cleanly, since killed hard it loses its latest writes (Mnesia
    /// writes its log behind), accounts created a moment before among them.
    pub fn go_down(&mut self) {
        match self {
            XmppServer::Prosody(s) => s.kill(),
            XmppServer::Ejabberd(s) => s.stop(),
        }
    }

    /// Starts it again on the same port with the same data.
    pub fn restart(&mut self) -> Result<()> {
        match self {
            XmppServer::Prosody(s) => s.restart(),
            XmppServer::Ejabberd(s) => s.restart(),
        }
    }

    /// The end of its log.
    pub fn log_tail(&self) -> String {
        match self {
            XmppServer::Prosody(s) => s.log_tail(),
            XmppServer::Ejabberd(s) => s.log_tail(),
        }
    }
}

/// Runs a test body once per server: `per_server!(name, |kind| async_body)` makes
/// `name::prosody` and `name::ejabberd` as tokio tests.
#[macro_export]
macro_rules! per_server {
    ($(#[$meta:meta])* $name:ident, $body:ident) => {
        $(#[$meta])*
        mod $name {
            #[tokio::test(flavor = "multi_thread")]
            async fn prosody() {
                super::$body($crate::ServerKind::Prosody).await
            }
            #[tokio::test(flavor = "multi_thread")]
            async fn ejabberd() {
                super::$body($crate::ServerKind::Ejabberd).await
            }
        }
    };
}

/// Like [`per_server!`], for a plain (blocking) test body: `name::prosody` and
/// `name::ejabberd` as `#[test]`s.
#[macro_export]
macro_rules! per_server_blocking {
    ($(#[$meta:meta])* $name:ident, $body:ident) => {
        $(#[$meta])*
        mod $name {
            #[test]
            fn prosody() {
                super::$body($crate::ServerKind::Prosody)
            }
            #[test]
            fn ejabberd() {
                super::$body($crate::ServerKind::Ejabberd)
            }
        }
    };
}
