//! A line: one SIP identity with its own stack — an account (registered) or the direct
//! phone (calls to and from `sip:user@ip:port` without a server).

use crate::model::{AccountId, EncryptionPolicy};
use hush_signaling::sip::{RegistrationHandle, SipStack};
use rsipstack::dialog::authenticate::Credential;
use rsipstack::sip::Uri;
use std::net::IpAddr;

/// Identifies a line inside the call layer.
pub(crate) type LineId = u64;

pub(crate) struct Line {
    pub(crate) stack: SipStack,
    pub(crate) account: Option<AccountId>,
    /// Our address of record (From of our calls, ZRTP cache identity).
    pub(crate) aor: Uri,
    pub(crate) credential: Option<Credential>,
    pub(crate) registration: Option<RegistrationHandle>,
    pub(crate) policy: EncryptionPolicy,
    /// The address we put in our SDP.
    pub(crate) media_ip: IpAddr,
    /// Answer every call at once with this audio (the echo-test peer, `answer --auto`).
    pub(crate) auto_answer: Option<crate::command::AudioChoice>,
}

/// The local address used to reach `remote` (no packet is sent).
pub(crate) fn local_ip_towards(remote: &str) -> Option<IpAddr> {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    sock.connect(remote).ok()?;
    sock.local_addr().ok().map(|a| a.ip())
}

/// `user@host` of a URI, without scheme, port or parameters: the identity ZRTP caches
/// secrets under, so the same peer is recognised whatever port it calls from.
pub(crate) fn identity(uri: &Uri) -> String {
    let host = uri.host_with_port.host.to_string();
    match &uri.auth {
        Some(a) => format!("{}@{host}", a.user),
        None => host,
    }
}
