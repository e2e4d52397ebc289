//! Which new incoming calls a stack takes. Everything a stranger can make it hold is
//! bounded: at most [`MAX_INCOMING_CALLS`] incoming calls at once, at most
//! [`MAX_RINGING_PER_SOURCE`] of them ringing from one IP address, and none rings longer
//! than the ring timeout (then 480 and "missed", see `stack`). The per-source limit does
//! not apply to the account's own servers (registrar, outbound proxy): every call through
//! them comes from their address. Over UDP a source address can be forged, so the
//! per-source limit only stops a caller that does not forge it; the ring timeout is what
//! frees the line from forged INVITEs that never end.

use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::{Host, Request};
use rsipstack::transport::connection::SipConnection;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

/// Incoming calls a stack holds at once (ringing or connected); more get 486 Busy Here.
pub const MAX_INCOMING_CALLS: usize = 8;
/// Unanswered incoming calls from one IP address (other than the account's servers) at
/// once; more get 486. Two let a real phone ring us while a first call still rings.
pub const MAX_RINGING_PER_SOURCE: usize = 2;
/// How long an incoming call rings before it is refused (480) and ends as missed.
pub const RING_TIMEOUT: Duration = Duration::from_secs(120);
/// Addresses remembered as the account's servers (a name may resolve to several).
const MAX_SERVERS: usize = 16;

/// The IP address a request came from: the top Via's `received` (added by the transport
/// when the sender's address differs from what it wrote), else the Via host if it is an
/// address. `None` when neither is one.
pub(crate) fn source_ip(req: &Request) -> Option<IpAddr> {
    let via = req.via_header().ok()?;
    let (_, hp) = SipConnection::parse_target_from_via(via).ok()?;
    match hp.host {
        Host::IpAddr(ip) => Some(ip),
        Host::Domain(_) => None,
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
        let server = source.is_some_and(|ip| self.servers.contains(&ip));
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
    fn the_source_is_where_the_datagram_came_from() {
        let req = |via: &str| {
            let raw = format!(
                "INVITE sip:bob@127.0.0.1 SIP/2.0\r\nVia: {via}\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
            );
            match rsipstack::sip::SipMessage::try_from(raw.as_bytes()) {
                Ok(rsipstack::sip::SipMessage::Request(r)) => r,
                other => panic!("not a request: {other:?}"),
            }
        };
        // What the transport writes when the sender claims another address.
        let forged = req("SIP/2.0/UDP 10.1.1.1:5060;branch=z9hG4bK1;received=192.0.2.9;rport=4000");
        assert_eq!(source_ip(&forged), ip("192.0.2.9"));
        assert_eq!(
            source_ip(&req("SIP/2.0/UDP 192.0.2.3:5060;branch=z9hG4bK1")),
            ip("192.0.2.3")
        );
        assert_eq!(
            source_ip(&req("SIP/2.0/UDP phone.example:5060;branch=z9hG4bK1")),
            None
        );
    }
}
