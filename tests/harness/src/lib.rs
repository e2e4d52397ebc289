//! Real servers and peers for tests: Prosody and ejabberd (XMPP) and Kamailio (SIP) started as child processes
//! on free loopback ports from the configs in `configs/`, polled until ready with a
//! bound, and stopped and reaped on drop. Nothing here is a mock.

mod baresip;
mod ejabberd;
mod kamailio;
mod linphonec;
mod otr_peer;
mod portal;
mod process;
mod prosody;
mod relay;
mod sip_peer;
mod socks;
mod vm;
mod wav;
mod xmpp_server;
mod xvfb;

pub use ashpd::desktop::screencast::CursorMode;
pub use baresip::Baresip;
pub use ejabberd::{Ejabberd, EjabberdOptions};
pub use kamailio::Kamailio;
pub use linphonec::{Linphonec, ZrtpSuites};
pub use otr_peer::{OtrPeer, build_otr_peer, hex, unhex};
pub use portal::{Painter, PortalDesktop, ScreenMemory, SessionBus, TestScreen};
pub use process::{TEST_PROCESS_TAG, free_port};
pub use prosody::Prosody;
pub use relay::Relay;
pub use sip_peer::{Challenger, SentInvite, SipPeer, header as sip_header, status as sip_status};
pub use socks::Socks5;
pub use vm::{VIVID_BARS, Vm, shows_vivid_bars, test_kernel_dir};
pub use wav::{read_wav_lenient, write_wav};
pub use xmpp_server::{ServerKind, XmppServer};
pub use xvfb::Xvfb;

/// Why a server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// Spawning, writing configs or generating certificates failed.
    #[error("{what}: {source}")]
    Io {
        /// What we were doing.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The server did not become ready in time; its log tail is included.
    #[error("{server} not ready after {secs} s; log tail:\n{log}")]
    NotReady {
        /// Which server.
        server: &'static str,
        /// How long we waited.
        secs: u64,
        /// The end of its output.
        log: String,
    },
    /// A helper tool failed (e.g. openssl).
    #[error("{0}")]
    Tool(String),
}

/// Result alias for the harness.
pub type Result<T> = std::result::Result<T, HarnessError>;

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
    let what = what.into();
    move |source| HarnessError::Io { what, source }
}
