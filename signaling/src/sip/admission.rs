//! Which new incoming calls a stack takes. Everything a stranger can make it hold is
//! bounded: at most [`MAX_INCOMING_CALLS`] incoming calls at once, at most
//! [`MAX_RINGING_PER_SOURCE`] of them ringing from one IP address, and none rings longer
//! than the ring timeout (then 480 and "missed", see `stack`). The per-source limit does
//! not apply to the account's own servers (registrar, outbound proxy): every call through
//! them comes from their address, and two places are kept for them whatever strangers
//! do. The source is the address the transport received a request from, never what the
//! request says about itself. Over UDP a source address can be forged, so the
//! per-source limit only stops a caller that does not forge it; the ring timeout is what
//! frees the line from forged INVITEs that never end.

use rsipstack::sip::prelude::{HeadersExt, ToTypedHeader};
use rsipstack::sip::uri::Received;
use rsipstack::sip::{Host, Param, Request, SipMessage};
use rsipstack::transaction::endpoint::TransportEventInspector;
use rsipstack::transaction::transaction::Transaction;
use rsipstack::transport::TransportEvent;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::time::Duration;

/// Incoming calls a stack holds at once (ringing or connected); more get 486 Busy Here.
pub const MAX_INCOMING_CALLS: usize = 8;
/// Unanswered incoming calls from one IP address (other than the account's servers) at
/// once; more get 486. Two let a real phone ring us while a first call still rings.
pub const MAX_RINGING_PER_SOURCE: usize = 2;
/// Of [`MAX_INCOMING_CALLS`], the places only calls through the account's servers may
/// take, so that strangers calling directly (or forging addresses) cannot keep every
/// call the registrar relays busy.
pub const KEPT_FOR_SERVERS: usize = 2;
/// Incoming calls at once that do not come through the account's servers.
pub const MAX_DIRECT_CALLS: usize = MAX_INCOMING_CALLS - KEPT_FOR_SERVERS;
/// How long an incoming call rings before it is refused (480) and ends as missed.
pub const RING_TIMEOUT: Duration = Duration::from_secs(120);
/// Addresses remembered as the account's servers (a name may resolve to several).
const MAX_SERVERS: usize = 16;

/// Where a request really came from: the address its transport received it from
/// (never what the request says about itself: a sender writes its own Via, `received`
/// included). `None` when the transport does not know (then no per-address limit).
pub(crate) fn source_of(tx: &Transaction) -> Option<SocketAddr> {
    let remote = tx.connection.as_ref()?.get_remote_addr()?;
    remote.addr.clone().try_into().ok()
}

/// Makes `req`'s top Via say where it really came from, so that every response to it
/// (with its retransmissions) goes back to the sender and not to an address it chose:
/// whatever `received` and `rport` the sender wrote (any number of them) are dropped,
/// then `received` is added when the sent-by is not the source's IP and `rport` when
/// the sender asked for it (RFC 3581). The transport does part of this, but leaves the
/// Via alone when its sent-by equals the source, and writes an IPv6 `received` in
/// brackets that it then cannot read back (and falls back to the sent-by).
pub(crate) fn pin_via(req: &mut Request, source: SocketAddr) {
    let Ok(via) = req.via_header_mut() else {
        return;
    };
    let pinned = via.update_first_value(|v| {
        let mut typed = v.typed()?;
        let rport_asked = typed.params.iter().any(|p| matches!(p, Param::Rport(_)));
        let before = typed.params.len();
        typed
            .params
            .retain(|p| !matches!(p, Param::Received(_) | Param::Rport(_)));
        let removed = before - typed.params.len();
        let sent_by_is_source = typed.uri.host_with_port.host == Host::IpAddr(source.ip());
        if !sent_by_is_source {
            typed
                .params
                .push(Param::Received(Received::new(source.ip().to_string())));
        }
        if rport_asked {
            typed.params.push(Param::Rport(Some(source.port())));
        }
        let added = usize::from(!sent_by_is_source) + usize::from(rport_asked);
        if removed > added {
            tracing::debug!(%source, "a request named other addresses as its source");
        }
        Ok(typed.into())
    });
    if let Err(e) = pinned {
        tracing::debug!(error = %e, "top Via not pinned to the source");
    }
}

/// Pins every incoming request's top Via to where it came from before rsipstack's
/// endpoint sees it: the endpoint answers some requests itself (a CANCEL for no call, a
/// retransmitted INVITE) by the Via, before our handler runs.
pub(crate) struct PinVia;

impl TransportEventInspector for PinVia {
    fn handle<'a, 'b>(
        &'a self,
        event: TransportEvent,
    ) -> Pin<Box<dyn Future<Output = Option<TransportEvent>> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        let event = match event {
            TransportEvent::Incoming(SipMessage::Request(mut req), conn, from) => {
                if let Ok(source) = from.get_socketaddr() {
                    pin_via(&mut req, source);
                }
                TransportEvent::Incoming(SipMessage::Request(req), conn, from)
            }
            other => other,
        };
        Box::pin(std::future::ready(Some(event)))
    }
}

/// Why a new call was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// [`MAX_INCOMING_CALLS`] are alive.
    Full,
    /// [`MAX_RINGING_PER_SOURCE`] ring from this address.
    SourceBusy,
}

/// What a live incoming dialog is now, as the dialog layer says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Live {
    /// Not answered yet.
    Ringing,
    /// Answered.
    Answered,
    /// Over (or unknown): forgotten.
    Gone,
}

/// The incoming calls alive, with where each came from, and the account's servers.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    live: HashMap<String, Option<IpAddr>>,
    servers: HashSet<IpAddr>,
}

impl Admission {
    /// Whether a new call from `source` may be taken. `state` says what each live dialog
    /// (by id) is now; ended ones are forgotten first, so nothing can leak.
    pub(crate) fn admit(
        &mut self,
        source: Option<IpAddr>,
        state: impl Fn(&str) -> Live,
    ) -> Result<(), Refusal> {
        let mut ringing_from_source = 0;
        let servers = &self.servers;
        self.live.retain(|id, from| match state(id) {
            Live::Gone => false,
            Live::Ringing => {
                if *from == source {
                    ringing_from_source += 1;
                }
                true
            }
            Live::Answered => true,
        });
        if self.live.len() >= MAX_INCOMING_CALLS {
            return Err(Refusal::Full);
        }
        let is_server = |ip: &Option<IpAddr>| ip.is_some_and(|ip| servers.contains(&ip));
        let server = is_server(&source);
        let strangers = self.live.values().filter(|from| !is_server(from)).count();
        if !server && strangers >= MAX_DIRECT_CALLS {
            return Err(Refusal::Full);
        }
        if !server && ringing_from_source >= MAX_RINGING_PER_SOURCE {
            return Err(Refusal::SourceBusy);
        }
        Ok(())
    }

    /// Records a call that was taken.
    pub(crate) fn taken(&mut self, dialog: String, source: Option<IpAddr>) {
        self.live.insert(dialog, source);
    }

    /// Forgets a call that ended.
    pub(crate) fn ended(&mut self, dialog: &str) {
        self.live.remove(dialog);
    }

    /// Remembers `ip` as one of the account's servers (bounded).
    pub(crate) fn trust_server(&mut self, ip: IpAddr) {
        if self.servers.len() < MAX_SERVERS {
            self.servers.insert(ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        s.parse().ok()
    }

    #[test]
    fn one_address_rings_at_most_twice_but_the_server_is_not_limited() {
        let mut a = Admission::default();
        let ringing = |_: &str| Live::Ringing;
        for n in 0..MAX_RINGING_PER_SOURCE {
            assert_eq!(a.admit(ip("192.0.2.7"), ringing), Ok(()));
            a.taken(format!("stranger-{n}"), ip("192.0.2.7"));
        }
        assert_eq!(a.admit(ip("192.0.2.7"), ringing), Err(Refusal::SourceBusy));
        assert_eq!(a.admit(ip("192.0.2.8"), ringing), Ok(()));
        // A call answered no longer counts as ringing.
        let first_answered = |id: &str| {
            if id == "stranger-0" {
                Live::Answered
            } else {
                Live::Ringing
            }
        };
        assert_eq!(a.admit(ip("192.0.2.7"), first_answered), Ok(()));

        a.trust_server("203.0.113.1".parse().expect("ip"));
        for n in 0..MAX_INCOMING_CALLS - 2 {
            assert_eq!(a.admit(ip("203.0.113.1"), ringing), Ok(()), "call {n}");
            a.taken(format!("proxied-{n}"), ip("203.0.113.1"));
        }
        assert_eq!(a.admit(ip("203.0.113.1"), ringing), Err(Refusal::Full));
        // Ended calls are forgotten when the next one is considered.
        let strangers_gone = |id: &str| {
            if id.starts_with("stranger") {
                Live::Gone
            } else {
                Live::Ringing
            }
        };
        assert_eq!(a.admit(ip("192.0.2.7"), strangers_gone), Ok(()));
        assert_eq!(a.live.len(), MAX_INCOMING_CALLS - 2);
    }

    #[test]
    fn strangers_cannot_take_the_places_kept_for_the_server() {
        let mut a = Admission::default();
        a.trust_server("203.0.113.1".parse().expect("ip"));
        let ringing = |_: &str| Live::Ringing;
        // Forged INVITEs from ever new addresses.
        for n in 0..MAX_DIRECT_CALLS {
            let from = ip(&format!("192.0.2.{}", n + 1));
            assert_eq!(a.admit(from, ringing), Ok(()), "stranger {n}");
            a.taken(format!("stranger-{n}"), from);
        }
        assert_eq!(a.admit(ip("198.51.100.1"), ringing), Err(Refusal::Full));
        for n in 0..KEPT_FOR_SERVERS {
            assert_eq!(a.admit(ip("203.0.113.1"), ringing), Ok(()), "relayed {n}");
            a.taken(format!("relayed-{n}"), ip("203.0.113.1"));
        }
        assert_eq!(a.admit(ip("203.0.113.1"), ringing), Err(Refusal::Full));
    }

    fn request(via: &str) -> Request {
        let raw = format!(
            "INVITE sip:bob@127.0.0.1 SIP/2.0\r\nVia: {via}\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        );
        match rsipstack::sip::SipMessage::try_from(raw.as_bytes()) {
            Ok(rsipstack::sip::SipMessage::Request(r)) => r,
            other => panic!("not a request: {other:?}"),
        }
    }

    /// Where rsipstack sends our responses to `req`.
    fn reply_to(req: &Request) -> Option<IpAddr> {
        use rsipstack::transport::connection::SipConnection;
        let via = req.via_header().ok()?;
        match SipConnection::parse_target_from_via(via).ok()?.1.host {
            rsipstack::sip::Host::IpAddr(ip) => Some(ip),
            rsipstack::sip::Host::Domain(_) => None,
        }
    }

    #[test]
    fn responses_go_where_the_request_came_from_not_where_it_says() {
        let source: SocketAddr = "192.0.2.3:5060".parse().expect("addr");
        // The sender wrote its true address as sent-by (so the transport adds nothing)
        // and a `received` of its choice: a victim for our responses, or the registrar.
        let mut forged =
            request("SIP/2.0/UDP 192.0.2.3:5060;branch=z9hG4bK1;received=198.51.100.77");
        assert_eq!(reply_to(&forged), ip("198.51.100.77"));
        pin_via(&mut forged, source);
        assert_eq!(reply_to(&forged), ip("192.0.2.3"));
        // What the transport wrote for a sender behind NAT stays as it is.
        let mut natted =
            request("SIP/2.0/UDP 10.1.1.1:5060;branch=z9hG4bK1;received=192.0.2.3;rport=4000");
        pin_via(&mut natted, source);
        assert_eq!(reply_to(&natted), ip("192.0.2.3"));
        let mut plain = request("SIP/2.0/UDP 192.0.2.3:5060;branch=z9hG4bK1");
        pin_via(&mut plain, source);
        assert_eq!(reply_to(&plain), ip("192.0.2.3"));
        // Several `received`: the first names the source, the last (which rsipstack
        // routes by) a victim.
        let mut doubled = request(
            "SIP/2.0/UDP 192.0.2.3:5060;branch=z9hG4bK1;received=192.0.2.3;received=198.51.100.77",
        );
        pin_via(&mut doubled, source);
        assert_eq!(reply_to(&doubled), ip("192.0.2.3"));
        // What the fuzzer found the first pin let through: a garbled Via the stack
        // still routes by (to its sent-by, 10.0.0.1).
        let garbled = "eived=19..0\"2.9;r/2.0/UDP 10.0.0.1:5060;branch=z4hG4bK7;recei+,ed=192.0.2.9;rpor27d=19..0\"2.9;r/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK7;received=192.0.2.9;rpo22";
        let stranger: SocketAddr = "192.0.2.50:5060".parse().expect("addr");
        let mut seen = rsipstack::transport::connection::SipConnection::update_msg_received(
            request(garbled).into(),
            stranger,
            rsipstack::sip::Transport::Udp,
        )
        .expect("the transport's view");
        let rsipstack::sip::SipMessage::Request(garbled) = &mut seen else {
            panic!("a request")
        };
        pin_via(garbled, stranger);
        if let Some(to) = reply_to(garbled) {
            assert_eq!(to, stranger.ip());
        }
        // An IPv6 sender whose sent-by is not its address: the transport's bracketed
        // `received` does not parse and it would route by the sent-by the sender wrote.
        let v6: SocketAddr = "[2001:db8::3]:5060".parse().expect("addr");
        let mut seen = rsipstack::transport::connection::SipConnection::update_msg_received(
            request("SIP/2.0/UDP [2001:db8::99]:5060;branch=z9hG4bK1;rport").into(),
            v6,
            rsipstack::sip::Transport::Udp,
        )
        .expect("the transport's view");
        let rsipstack::sip::SipMessage::Request(forged6) = &mut seen else {
            panic!("a request")
        };
        assert_ne!(reply_to(forged6), Some(v6.ip()), "the transport's own view");
        pin_via(forged6, v6);
        assert_eq!(reply_to(forged6), Some(v6.ip()));
    }
}
