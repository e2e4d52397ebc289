//! A hand-written SIP user agent over raw UDP, for tests that must send or see the
//! exact bytes on the wire: a caller with a crafted offer, a burst of INVITEs, or a
//! callee that challenges with a realm of its own and records what comes back. It is
//! not a SIP stack; it knows only the few messages those tests need.

use crate::{HarnessError, Kamailio, Result, io};
use md5::{Digest, Md5};
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A raw SIP peer on a UDP socket of 127.0.0.1.
pub struct SipPeer {
    sock: UdpSocket,
    user: String,
    next: u32,
}

/// An INVITE we sent, with what its CANCEL and ACK must repeat.
#[derive(Debug, Clone)]
pub struct SentInvite {
    /// Where it went.
    pub to: SocketAddr,
    /// Its Request-URI.
    pub uri: String,
    /// Its Call-ID.
    pub call_id: String,
    branch: String,
    from: String,
    cseq: u32,
}

/// The value of the first header `name` (or its compact form) in a SIP message.
pub fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    headers(msg, name).next()
}

fn headers<'a>(msg: &'a str, name: &str) -> impl Iterator<Item = &'a str> + use<'a> {
    let name = name.to_ascii_lowercase();
    let compact = match name.as_str() {
        "via" => "v",
        "from" => "f",
        "to" => "t",
        "call-id" => "i",
        "contact" => "m",
        "content-length" => "l",
        _ => "",
    };
    msg.split("\r\n")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(move |l| {
            let (k, v) = l.split_once(':')?;
            let k = k.trim().to_ascii_lowercase();
            (k == name || (!compact.is_empty() && k == compact)).then(|| v.trim())
        })
}

/// The status code of a response, if `msg` is one.
pub fn status(msg: &str) -> Option<u16> {
    msg.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
}

fn md5_hex(s: &str) -> String {
    Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn param(challenge: &str, name: &str) -> Option<String> {
    let start = challenge.find(&format!("{name}=\""))? + name.len() + 2;
    let end = challenge[start..].find('"')? + start;
    Some(challenge[start..end].to_owned())
}

fn tool(what: String) -> HarnessError {
    HarnessError::Tool(what)
}

impl SipPeer {
    /// A peer for `user` on a free UDP port.
    pub fn bind(user: &str) -> Result<SipPeer> {
        SipPeer::bind_on(user, std::net::Ipv4Addr::LOCALHOST)
    }

    /// A peer for `user` on a free UDP port of `ip` (any 127.x.y.z address is this
    /// machine, so peers can come from different addresses).
    pub fn bind_on(user: &str, ip: std::net::Ipv4Addr) -> Result<SipPeer> {
        let sock = UdpSocket::bind((ip, 0)).map_err(io("bind SIP peer"))?;
        Ok(SipPeer {
            sock,
            user: user.to_owned(),
            next: 1,
        })
    }

    /// Our address.
    pub fn addr(&self) -> SocketAddr {
        self.sock
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Sends `msg` as it is (for requests the other helpers do not write).
    pub fn send(&self, msg: &str, to: SocketAddr) -> Result<()> {
        self.sock
            .send_to(msg.as_bytes(), to)
            .map(|_| ())
            .map_err(io("send SIP"))
    }

    /// The next datagram within `limit`, with its source.
    pub fn recv(&self, limit: Duration) -> Option<(String, SocketAddr)> {
        let deadline = Instant::now() + limit;
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.sock.set_read_timeout(Some(left)).ok()?;
            match self.sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    return Some((String::from_utf8_lossy(&buf[..n]).into_owned(), from));
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None;
                }
                Err(_) => continue,
            }
        }
    }

    /// The next request whose method is `method` within `limit`, with its source; other
    /// datagrams are skipped.
    pub fn next_request(&self, method: &str, limit: Duration) -> Option<(String, SocketAddr)> {
        let deadline = Instant::now() + limit;
        let start = format!("{method} ");
        loop {
            let (m, from) = self.recv(deadline.saturating_duration_since(Instant::now()))?;
            if m.starts_with(&start) {
                return Some((m, from));
            }
        }
    }

    /// Answers the request `req` (from `to`) with `status` (e.g. "180 Ringing"), copying
    /// its Via, From, Call-ID and CSeq; its To gets `;tag=to_tag` when given. `extra` are
    /// whole header lines; a non-empty `body` is sent as SDP.
    pub fn reply(
        &self,
        req: &str,
        to: SocketAddr,
        status: &str,
        to_tag: Option<&str>,
        extra: &[String],
        body: &str,
    ) -> Result<()> {
        let mut out = format!("SIP/2.0 {status}\r\n");
        for v in headers(req, "Via") {
            out.push_str(&format!("Via: {v}\r\n"));
        }
        for name in ["From", "Call-ID", "CSeq"] {
            if let Some(v) = header(req, name) {
                out.push_str(&format!("{name}: {v}\r\n"));
            }
        }
        let to_header = header(req, "To").unwrap_or_default();
        match to_tag {
            Some(tag) => out.push_str(&format!("To: {to_header};tag={tag}\r\n")),
            None => out.push_str(&format!("To: {to_header}\r\n")),
        }
        for line in extra {
            out.push_str(line);
            out.push_str("\r\n");
        }
        if !body.is_empty() {
            out.push_str("Content-Type: application/sdp\r\n");
        }
        out.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        self.send(&out, to)
    }

    /// Answers the INVITE `req` (from `to`) with 200 OK, our Contact and `sdp`; the To
    /// tag is `to_tag`.
    pub fn accept(&self, req: &str, to: SocketAddr, to_tag: &str, sdp: &str) -> Result<()> {
        let contact = format!("Contact: <sip:{}@{}>", self.user, self.addr());
        self.reply(req, to, "200 OK", Some(to_tag), &[contact], sdp)
    }

    /// Answers `req` (from `to`) with a 401 challenge for `realm`.
    pub fn challenge(&self, req: &str, to: SocketAddr, realm: &str, to_tag: &str) -> Result<()> {
        let www = format!(
            "WWW-Authenticate: Digest realm=\"{realm}\", nonce=\"peer-{}\", algorithm=MD5",
            self.addr().port()
        );
        self.reply(req, to, "401 Unauthorized", Some(to_tag), &[www], "")
    }

    fn seq(&mut self) -> u32 {
        self.next += 1;
        self.next
    }

    /// Registers our address as `user`'s contact at Kamailio, answering its MD5 digest
    /// challenge with `password`.
    pub fn register(&mut self, kamailio: &Kamailio, password: &str) -> Result<()> {
        let port = kamailio.port();
        let server = SocketAddr::from(([127, 0, 0, 1], port));
        let uri = format!("sip:127.0.0.1:{port}");
        let mut auth: Option<String> = None;
        for _ in 0..2 {
            let seq = self.seq();
            let (local, user) = (self.addr(), &self.user);
            let mut msg = format!(
                "REGISTER {uri} SIP/2.0\r\n\
                 Via: SIP/2.0/UDP {local};branch=z9hG4bK-peer-reg-{seq}\r\n\
                 Max-Forwards: 70\r\n\
                 From: <sip:{user}@127.0.0.1>;tag=reg{seq}\r\n\
                 To: <sip:{user}@127.0.0.1>\r\n\
                 Call-ID: peer-reg-{user}-{local}\r\n\
                 CSeq: {seq} REGISTER\r\n\
                 Contact: <sip:{user}@{local}>\r\n\
                 Expires: 300\r\n"
            );
            if let Some(a) = &auth {
                msg.push_str(&format!("Authorization: {a}\r\n"));
            }
            msg.push_str("Content-Length: 0\r\n\r\n");
            self.send(&msg, server)?;
            let resp = loop {
                let (m, _) = self.recv(Duration::from_secs(5)).ok_or_else(|| {
                    tool(format!("no answer to REGISTER\n{}", kamailio.log_tail()))
                })?;
                if status(&m).is_some_and(|s| s >= 200) {
                    break m;
                }
            };
            match status(&resp) {
                Some(200) => return Ok(()),
                Some(401) if auth.is_none() => {
                    let ch = header(&resp, "WWW-Authenticate")
                        .ok_or_else(|| tool(format!("401 without a challenge: {resp}")))?;
                    let (Some(realm), Some(nonce)) = (param(ch, "realm"), param(ch, "nonce"))
                    else {
                        return Err(tool(format!("unreadable challenge: {ch}")));
                    };
                    let ha1 = md5_hex(&format!("{user}:{realm}:{password}"));
                    let ha2 = md5_hex(&format!("REGISTER:{uri}"));
                    let response = md5_hex(&format!("{ha1}:{nonce}:{ha2}"));
                    auth = Some(format!(
                        "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", algorithm=MD5"
                    ));
                }
                _ => return Err(tool(format!("REGISTER refused: {resp}"))),
            }
        }
        Err(tool("REGISTER challenged twice".into()))
    }

    /// Sends an INVITE for `uri` with `sdp` to `to`.
    pub fn invite(&mut self, to: SocketAddr, uri: &str, sdp: &str) -> Result<SentInvite> {
        self.invite_saying(to, uri, sdp, "")
    }

    /// Sends an INVITE as [`SipPeer::invite`] does, with `via_params` (such as
    /// `;received=192.0.2.9`) added to its Via, as a sender lying about its address would.
    pub fn invite_saying(
        &mut self,
        to: SocketAddr,
        uri: &str,
        sdp: &str,
        via_params: &str,
    ) -> Result<SentInvite> {
        let seq = self.seq();
        let local = self.addr();
        let inv = SentInvite {
            to,
            uri: uri.to_owned(),
            call_id: format!("peer-{seq}-{}@127.0.0.1", local.port()),
            branch: format!("z9hG4bK-peer-inv-{seq}-{}", local.port()),
            from: format!("<sip:{}@{local}>;tag=inv{seq}", self.user),
            cseq: 1,
        };
        let msg = format!(
            "INVITE {uri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch={branch}{via_params}\r\n\
             Max-Forwards: 70\r\n\
             From: {from}\r\n\
             To: <{uri}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: <sip:{user}@{local}>\r\n\
             Content-Type: application/sdp\r\n\
             Content-Length: {len}\r\n\r\n{sdp}",
            branch = inv.branch,
            from = inv.from,
            call_id = inv.call_id,
            user = self.user,
            len = sdp.len(),
        );
        self.send(&msg, to)?;
        Ok(inv)
    }

    /// Cancels an INVITE that has not had its final answer.
    pub fn cancel(&self, inv: &SentInvite) -> Result<()> {
        let msg = format!(
            "CANCEL {uri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch={branch}\r\n\
             Max-Forwards: 70\r\n\
             From: {from}\r\n\
             To: <{uri}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} CANCEL\r\n\
             Content-Length: 0\r\n\r\n",
            uri = inv.uri,
            local = self.addr(),
            branch = inv.branch,
            from = inv.from,
            call_id = inv.call_id,
            cseq = inv.cseq,
        );
        self.send(&msg, inv.to)
    }

    /// Acknowledges a failure response to our INVITE (RFC 3261 §17.1.1.3).
    pub fn ack(&self, inv: &SentInvite, response: &str) -> Result<()> {
        let to = header(response, "To").unwrap_or_default();
        let msg = format!(
            "ACK {uri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch={branch}\r\n\
             Max-Forwards: 70\r\n\
             From: {from}\r\n\
             To: {to}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} ACK\r\n\
             Content-Length: 0\r\n\r\n",
            uri = inv.uri,
            local = self.addr(),
            branch = inv.branch,
            from = inv.from,
            call_id = inv.call_id,
            cseq = inv.cseq,
        );
        self.send(&msg, inv.to)
    }

    /// Every response to `inv` until its final one (within `limit`), in order; a
    /// failure is acknowledged.
    pub fn responses(&self, inv: &SentInvite, limit: Duration) -> Vec<String> {
        self.responses_until(inv, limit, |_| false)
    }

    /// Every response to `inv` until its final one or one whose status `stop` picks
    /// (within `limit`), in order; a failure is acknowledged.
    pub fn responses_until(
        &self,
        inv: &SentInvite,
        limit: Duration,
        stop: impl Fn(u16) -> bool,
    ) -> Vec<String> {
        let deadline = Instant::now() + limit;
        let mut out = Vec::new();
        while let Some((m, _)) = self.recv(deadline.saturating_duration_since(Instant::now())) {
            let ours = header(&m, "Call-ID") == Some(inv.call_id.as_str())
                && header(&m, "CSeq").is_some_and(|c| c.ends_with("INVITE"));
            let Some(code) = status(&m).filter(|_| ours) else {
                continue;
            };
            if code >= 300 {
                let _ = self.ack(inv, &m);
            }
            out.push(m);
            if code >= 200 || stop(code) {
                break;
            }
        }
        out
    }

    /// Turns this peer into a callee that answers every INVITE with a 401 challenge for
    /// `realm` (as a rogue callee or hop would, to collect password hashes), and keeps
    /// every request it receives until [`Challenger::finish`].
    pub fn challenge_invites(self, realm: &str) -> Challenger {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let realm = realm.to_owned();
        let thread = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut nonce = 0u32;
            while !flag.load(Ordering::Relaxed) {
                let Some((req, from)) = self.recv(Duration::from_millis(50)) else {
                    continue;
                };
                if req.starts_with("INVITE ") {
                    nonce += 1;
                    let _ = self.send(&challenge(&req, &realm, nonce), from);
                }
                seen.push(req);
            }
            seen
        });
        Challenger { stop, thread }
    }
}

/// A 401 for `req` with a digest challenge for `realm`.
fn challenge(req: &str, realm: &str, nonce: u32) -> String {
    let mut out = String::from("SIP/2.0 401 Unauthorized\r\n");
    for v in headers(req, "Via") {
        out.push_str(&format!("Via: {v}\r\n"));
    }
    for name in ["From", "Call-ID", "CSeq"] {
        if let Some(v) = header(req, name) {
            out.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    let to = header(req, "To").unwrap_or_default();
    out.push_str(&format!("To: {to};tag=challenger\r\n"));
    out.push_str(&format!(
        "WWW-Authenticate: Digest realm=\"{realm}\", nonce=\"rogue-{nonce}\", algorithm=MD5\r\n"
    ));
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}

/// A running challenging callee (see [`SipPeer::challenge_invites`]).
pub struct Challenger {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<String>>,
}

impl Challenger {
    /// Stops it (within 50 ms) and returns every request it received, in order.
    pub fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}
