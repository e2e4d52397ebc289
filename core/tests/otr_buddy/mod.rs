//! The remote buddy for OTR tests: the C libotr peer from the harness, carried over a
//! real XMPP server (Prosody or ejabberd) by an XMPP account. Everything it receives is kept raw, so tests can
//! assert on exactly what reached the other side.

use hush_harness::{OtrPeer, XmppServer, hex, unhex};
use hush_signaling::xmpp::account::{self, XmppCommand, XmppHandle};
use hush_signaling::xmpp::chat::XmppEvent;
use hush_signaling::xmpp::{BareJid, HushConnector, Trust, cert_fingerprint_from_pem};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// What the buddy saw.
#[derive(Default, Debug)]
pub struct Seen {
    /// Every message body as it arrived over XMPP.
    pub raw: Vec<String>,
    /// What libotr showed the buddy (decrypted or plain).
    pub shown: Vec<String>,
    /// The peer's event lines: secure, insecure, finished, smp ..., newfp ..., notice ...
    pub events: Vec<String>,
}

struct Shared {
    peer: Mutex<Option<OtrPeer>>,
    /// Send every message shown back to its sender (benchmarks).
    echo: std::sync::atomic::AtomicBool,
    seen: Mutex<Seen>,
    changed: Condvar,
}

/// The C libotr buddy on XMPP.
pub struct Buddy {
    rt: tokio::runtime::Runtime,
    shared: Arc<Shared>,
    handle: XmppHandle,
    /// Its address.
    pub jid: String,
}

fn connector(server: &XmppServer) -> HushConnector {
    let pem = std::fs::read(server.cert_path()).expect("cert");
    HushConnector::direct(
        "127.0.0.1",
        server.port(),
        Trust::Pinned(cert_fingerprint_from_pem(&pem).expect("fp")),
    )
}

/// Sends what the peer printed and records the rest.
fn absorb(shared: &Shared, handle: &XmppHandle, lines: Vec<String>) {
    let mut seen = shared.seen.lock().expect("seen");
    for l in lines {
        let mut parts = l.splitn(3, ' ');
        let (kind, a, b) = (parts.next(), parts.next(), parts.next());
        match (kind, a, b) {
            (Some("inject"), Some(to), Some(body)) => handle.command(XmppCommand::Send {
                to: to.parse::<BareJid>().expect("jid"),
                body: unhex(body),
                id: None,
            }),
            (Some("show"), Some(_), Some(body)) => seen.shown.push(unhex(body)),
            _ => seen.events.push(l),
        }
    }
    shared.changed.notify_all();
}

/// What the buddy sends itself to learn that the server delivers to it.
const READY: &str = "hush-buddy-ready";

impl Buddy {
    /// Registers `user@localhost`, logs in, and starts a libotr peer with a fresh key.
    pub fn start(server: &XmppServer, user: &str) -> Buddy {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let me: BareJid = format!("{user}@localhost").parse().expect("jid");
        let conn = connector(server);
        let password = format!("{user}-buddy-pw");
        rt.block_on(hush_signaling::xmpp::register_account(
            &conn, &me, &password,
        ))
        .expect("register the buddy");
        let (handle, mut events) = {
            let _guard = rt.enter();
            account::start(conn, me.clone(), password)
        };
        let shared = Arc::new(Shared {
            peer: Mutex::new(Some(OtrPeer::start(&me.to_string()).expect("otr_peer"))),
            seen: Mutex::new(Seen::default()),
            changed: Condvar::new(),
            echo: std::sync::atomic::AtomicBool::new(false),
        });
        let (online_tx, online_rx) = std::sync::mpsc::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        {
            let shared = shared.clone();
            let handle = handle.clone();
            let me = me.clone();
            rt.spawn(async move {
                while let Some(ev) = events.recv().await {
                    match ev {
                        XmppEvent::Online { .. } => {
                            let _ = online_tx.send(());
                        }
                        XmppEvent::Message { from, body, .. } if from == me && body == READY => {
                            let _ = ready_tx.send(());
                        }
                        XmppEvent::Message { from, body, .. } => {
                            shared.seen.lock().expect("seen").raw.push(body.clone());
                            let out = {
                                let mut p = shared.peer.lock().expect("peer");
                                let Some(p) = p.as_mut() else { continue };
                                let mut out = p
                                    .run(&format!("recv {from} {}", hex(&body)))
                                    .unwrap_or_default();
                                if shared.echo.load(std::sync::atomic::Ordering::Relaxed) {
                                    let shown: Vec<String> = out
                                        .iter()
                                        .filter_map(|l| {
                                            l.split(' ').nth(2).filter(|_| l.starts_with("show "))
                                        })
                                        .map(str::to_owned)
                                        .collect();
                                    for text in shown {
                                        out.extend(
                                            p.run(&format!("send {from} {text}"))
                                                .unwrap_or_default(),
                                        );
                                    }
                                }
                                out
                            };
                            absorb(&shared, &handle, out);
                        }
                        _ => {}
                    }
                }
            });
        }
        online_rx
            .recv_timeout(Duration::from_secs(15))
            .expect("the buddy is online");
        // "Online" is said when the initial presence is queued, not when the server has
        // it: a message to our bare JID sent before that can take the server's offline
        // path (ejabberd) and never arrive. One to ourselves comes back only once the
        // server delivers to us.
        handle.command(XmppCommand::Send {
            to: me.clone(),
            body: READY.to_owned(),
            id: None,
        });
        ready_rx
            .recv_timeout(Duration::from_secs(15))
            .expect("the server delivers to the buddy");
        Buddy {
            rt,
            shared,
            handle,
            jid: me.to_string(),
        }
    }

    /// Runs a peer command (its output is sent or recorded) and returns the other lines.
    pub fn run(&self, command: &str) -> Vec<String> {
        let out = {
            let mut p = self.shared.peer.lock().expect("peer");
            p.as_mut()
                .expect("peer running")
                .run(command)
                .unwrap_or_else(|e| panic!("{command}: {e}"))
        };
        let direct: Vec<String> = out
            .iter()
            .filter(|l| !l.starts_with("inject "))
            .cloned()
            .collect();
        absorb(&self.shared, &self.handle, out);
        direct
    }

    /// Sends every message it is shown straight back (for round-trip measurements).
    #[allow(dead_code)]
    pub fn echo(&self, on: bool) {
        self.shared
            .echo
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Replaces the peer with a new one (a new key: a "reinstalled" buddy).
    pub fn new_key(&self) {
        let fresh = OtrPeer::start(&self.jid).expect("otr_peer");
        *self.shared.peer.lock().expect("peer") = Some(fresh);
    }

    /// Sends `body` to `to` as is, past libotr: what a hostile buddy (or its server)
    /// can put on the wire.
    #[allow(dead_code)]
    pub fn send_raw(&self, to: &str, body: &str) {
        self.handle.command(XmppCommand::Send {
            to: to.parse::<BareJid>().expect("jid"),
            body: body.to_owned(),
            id: None,
        });
    }

    /// Our fingerprint.
    pub fn fingerprint(&self) -> String {
        let out = self.run("fp");
        out.iter()
            .find_map(|l| l.strip_prefix("fp ").map(str::to_owned))
            .expect("fingerprint")
    }

    /// Sends a message to `to` through libotr.
    pub fn say(&self, to: &str, text: &str) {
        self.run(&format!("send {to} {}", hex(text)));
    }

    /// Waits (at most 15 s) until `f` holds for what the buddy saw.
    pub fn wait<T>(&self, what: &str, f: impl Fn(&Seen) -> Option<T>) -> T {
        self.wait_up_to(Duration::from_secs(15), what, f)
    }

    /// Waits at most `limit` until `f` holds for what the buddy saw; what it saw,
    /// if not.
    pub fn try_wait_up_to<T>(
        &self,
        limit: Duration,
        what: &str,
        f: impl Fn(&Seen) -> Option<T>,
    ) -> Result<T, String> {
        let deadline = Instant::now() + limit;
        let mut seen = self.shared.seen.lock().expect("seen");
        loop {
            if let Some(v) = f(&seen) {
                return Ok(v);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("buddy: no {what} within {limit:?}; saw {seen:?}"));
            }
            seen = self
                .shared
                .changed
                .wait_timeout(seen, left)
                .expect("seen")
                .0;
        }
    }

    /// Waits at most `limit` until `f` holds for what the buddy saw.
    pub fn wait_up_to<T>(&self, limit: Duration, what: &str, f: impl Fn(&Seen) -> Option<T>) -> T {
        self.try_wait_up_to(limit, what, f)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// A copy of what the buddy saw so far.
    pub fn seen(&self) -> Seen {
        let s = self.shared.seen.lock().expect("seen");
        Seen {
            raw: s.raw.clone(),
            shown: s.shown.clone(),
            events: s.events.clone(),
        }
    }
}

impl Drop for Buddy {
    fn drop(&mut self) {
        self.handle.command(XmppCommand::Stop);
        self.shared.peer.lock().map(|mut p| p.take()).ok();
        let _ = &self.rt;
    }
}
