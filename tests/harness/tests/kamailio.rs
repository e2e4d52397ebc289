//! The harness's Kamailio really is a registrar with digest authentication: REGISTER is
//! challenged (401), accepted with the right password (200) and refused with a wrong one
//! (403). Uses hand-written SIP over UDP so it tests the server, not our SIP stack.

use hush_harness::Kamailio;
use md5::{Digest, Md5};
use std::net::UdpSocket;
use std::time::Duration;

fn md5_hex(s: &str) -> String {
    Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn register(sock: &UdpSocket, port: u16, user: &str, cseq: u32, auth: Option<&str>) -> String {
    let local = sock.local_addr().expect("local addr");
    let mut msg = format!(
        "REGISTER sip:127.0.0.1:{port} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-reg-{cseq}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{user}@127.0.0.1>;tag=t{user}\r\n\
         To: <sip:{user}@127.0.0.1>\r\n\
         Call-ID: reg-{user}@127.0.0.1\r\n\
         CSeq: {cseq} REGISTER\r\n\
         Contact: <sip:{user}@{local}>\r\n\
         Expires: 60\r\n"
    );
    if let Some(a) = auth {
        msg.push_str(&format!("Authorization: {a}\r\n"));
    }
    msg.push_str("Content-Length: 0\r\n\r\n");
    sock.send_to(msg.as_bytes(), ("127.0.0.1", port))
        .expect("send");
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("response within the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn param<'a>(challenge: &'a str, name: &str) -> &'a str {
    let start = challenge
        .find(&format!("{name}=\""))
        .expect("param present")
        + name.len()
        + 2;
    let end = challenge[start..].find('"').expect("closing quote") + start;
    &challenge[start..end]
}

fn authorization(challenge_resp: &str, user: &str, password: &str, port: u16) -> String {
    let header = challenge_resp
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("www-authenticate:"))
        .expect("WWW-Authenticate header");
    let realm = param(header, "realm");
    let nonce = param(header, "nonce");
    let uri = format!("sip:127.0.0.1:{port}");
    let ha1 = md5_hex(&format!("{user}:{realm}:{password}"));
    let ha2 = md5_hex(&format!("REGISTER:{uri}"));
    let response = md5_hex(&format!("{ha1}:{nonce}:{ha2}"));
    format!(
        "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", algorithm=MD5"
    )
}

#[test]
fn register_is_challenged_then_accepted_or_forbidden() {
    let k = Kamailio::start().expect("kamailio starts");
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");

    let r = register(&sock, k.port(), "alice", 1, None);
    assert!(r.starts_with("SIP/2.0 401"), "{r}\n{}", k.log_tail());
    let auth = authorization(&r, "alice", "alicepw", k.port());
    let r = register(&sock, k.port(), "alice", 2, Some(&auth));
    assert!(r.starts_with("SIP/2.0 200"), "{r}\n{}", k.log_tail());
    assert!(
        r.contains("Contact:") || r.contains("contact:"),
        "binding echoed: {r}"
    );

    let r = register(&sock, k.port(), "bob", 1, None);
    assert!(r.starts_with("SIP/2.0 401"), "{r}");
    let auth = authorization(&r, "bob", "not-bobs-password", k.port());
    let r = register(&sock, k.port(), "bob", 2, Some(&auth));
    assert!(r.starts_with("SIP/2.0 403"), "{r}");
}

#[test]
fn servers_are_reaped_on_drop() {
    let k = Kamailio::start().expect("kamailio starts");
    let port = k.port();
    drop(k);
    // The port is free again once the process is gone.
    assert!(
        UdpSocket::bind(("127.0.0.1", port)).is_ok(),
        "kamailio still holds its port after drop"
    );
}
