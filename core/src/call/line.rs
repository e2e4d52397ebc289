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
    pub(crate) auto_answer: Option<crate::command::MediaChoice>,
}

/// The local address used to reach `remote` (no packet is sent).
/// Resolves a server's name (bounded: a dead resolver must not leave the account
/// "connecting" forever) and returns our address towards it, or why not in words.
pub(crate) async fn route_to_server(
    resolver: &Resolver,
    host: &str,
    port: u16,
) -> Result<IpAddr, String> {
    let lookup = resolver(host.to_owned(), port);
    let addrs: Vec<std::net::SocketAddr> =
        match tokio::time::timeout(std::time::Duration::from_secs(5), lookup).await {
            Ok(Ok(a)) => a,
            Ok(Err(_)) => {
                return Err(format!(
                    "cannot find the server {host} (is the name right?)"
                ));
            }
            Err(_) => {
                return Err(format!(
                    "cannot find the server {host}: no answer from the name service within 5 s"
                ));
            }
        };
    addrs
        .iter()
        .find_map(|a| local_ip_towards(&a.to_string()))
        .ok_or_else(|| format!("no route to the server {host}:{port}"))
}

/// How the phone finds a server's addresses by name: the system's resolver, or one a
/// test gives (e.g. one that never answers).
pub type Resolver = std::sync::Arc<
    dyn Fn(
            String,
            u16,
        ) -> std::pin::Pin<
            Box<
                dyn std::future::Future<Output = std::io::Result<Vec<std::net::SocketAddr>>> + Send,
            >,
        > + Send
        + Sync,
>;

/// The system's resolver.
pub(crate) fn system_resolver() -> Resolver {
    std::sync::Arc::new(|host: String, port: u16| {
        Box::pin(async move {
            tokio::net::lookup_host((host.as_str(), port))
                .await
                .map(|a| a.collect())
        })
    })
}

pub(crate) fn local_ip_towards(remote: &str) -> Option<IpAddr> {
    let any = if remote.starts_with('[') {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    };
    let sock = std::net::UdpSocket::bind(any).ok()?;
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
