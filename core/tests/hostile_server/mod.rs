//! A hostile XMPP server for tests: an external component (XEP-0114) connection to the
//! harness Prosody, which may send stanzas from any address at its domain — what a
//! hostile federated server can do. What Prosody sends back is read and discarded on a
//! thread, so the connection never stalls on it.

use hush_harness::Prosody;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A connected hostile server.
pub struct HostileServer {
    stream: TcpStream,
    /// Its domain: senders are `anything@domain/anything`.
    pub domain: String,
    next_id: u64,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

/// Reads until `done` holds for what arrived (bounded: 10 s).
fn read_until(stream: &mut TcpStream, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !done(&String::from_utf8_lossy(&got)) {
        assert!(Instant::now() < deadline, "component: no answer: {got:?}");
        match stream.read(&mut buf) {
            Ok(0) => panic!("component: closed: {}", String::from_utf8_lossy(&got)),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("component: {e}"),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

impl HostileServer {
    /// Connects and authenticates as the harness Prosody's component.
    pub fn connect(server: &Prosody) -> HostileServer {
        let domain = server.component_domain().to_owned();
        let mut stream =
            TcpStream::connect(("127.0.0.1", server.component_port())).expect("component port");
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        write!(
            stream,
            "<stream:stream xmlns='jabber:component:accept' \
             xmlns:stream='http://etherx.jabber.org/streams' to='{domain}'>"
        )
        .expect("write");
        let header = read_until(&mut stream, |s| {
            s.find("<stream:stream")
                .is_some_and(|i| s[i..].contains('>'))
        });
        let id = ["id='", "id=\""]
            .iter()
            .find_map(|k| {
                let start = header.find(k)? + k.len();
                let end = header[start..].find(['\'', '"'])?;
                Some(header[start..start + end].to_owned())
            })
            .expect("stream id");
        let digest = ring::digest::digest(
            &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
            format!("{id}{}", server.component_secret()).as_bytes(),
        );
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        write!(stream, "<handshake>{hex}</handshake>").expect("write");
        let answer = read_until(&mut stream, |s| {
            s.contains("<handshake") || s.contains("stream:error")
        });
        assert!(!answer.contains("stream:error"), "refused: {answer}");
        stream.set_read_timeout(None).expect("timeout");
        let mut reader = stream.try_clone().expect("clone");
        std::thread::spawn(move || {
            let mut buf = [0u8; 64 * 1024];
            while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
        });
        HostileServer {
            stream,
            domain,
            next_id: 0,
        }
    }

    /// Sends a chat message from `user@domain/resource` to `to`.
    pub fn send(&mut self, user: &str, resource: &str, to: &str, body: &str) {
        self.next_id += 1;
        write!(
            self.stream,
            "<message from='{user}@{}/{resource}' to='{to}' type='chat' id='h{}'>\
             <body>{}</body></message>",
            self.domain,
            self.next_id,
            escape(body)
        )
        .expect("send to prosody");
    }
}
