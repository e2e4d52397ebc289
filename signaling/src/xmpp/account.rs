//! The driver of one XMPP account: a tokio task owning the stanza stream (with our own
//! reconnector: short retry delays, and a stop on a wrong password or an untrusted
//! certificate) and the [`ChatCore`]. Commands come in through an [`XmppHandle`];
//! everything that happens goes out as [`XmppEvent`]s, over a bounded channel: while the
//! consumer lags, the stream is not read (the server holds what follows), so a flood
//! cannot pile up in memory here. Commands are handled meanwhile.

use super::chat::{ChatCore, Outbound, Show, XmppEvent};
use super::connector::HushConnector;
use super::register::{check_session, login_stream};
use crate::SignalingError;
use futures::StreamExt;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::stanzastream::{Connection, Event, StanzaStage, StanzaStream, StreamEvent};

/// First retry delay after a lost connection; doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(250);
const MAX_RETRY: Duration = Duration::from_secs(4);
/// Longest wait before a new stream after ones that never came online or dropped soon.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A session up this long was not dropped for what it is: the next reconnects at once.
const STEADY: Duration = Duration::from_secs(30);
/// Refusals of a password that already worked in this run before the account stops.
const AUTH_RETRIES: u32 = 3;
/// Events waiting in the channel to the consumer.
pub const EVENT_QUEUE: usize = 256;
/// Events produced but not yet in the channel beyond which the stream is not read.
const BACKLOG: usize = 64;
/// How long the last events (e.g. why the account stopped) may wait for the consumer.
const LAST_EVENTS: Duration = Duration::from_secs(5);

/// What the account can be asked to do.
#[derive(Debug, Clone)]
pub enum XmppCommand {
    /// Send a chat message (queued while offline).
    Send {
        /// Recipient.
        to: BareJid,
        /// Text.
        body: String,
        /// Stanza id to use (the caller tracks delivery by it); `None` picks one.
        id: Option<String>,
    },
    /// Say something in a joined room.
    SendRoom {
        /// The room.
        room: BareJid,
        /// Text.
        body: String,
    },
    /// Our availability.
    SetShow(Show),
    /// Add a contact (and ask to see their presence).
    AddContact {
        /// Who.
        jid: BareJid,
        /// Alias.
        name: Option<String>,
        /// Group.
        group: Option<String>,
    },
    /// Rename a contact or move it to another group.
    UpdateContact {
        /// Who.
        jid: BareJid,
        /// Alias.
        name: Option<String>,
        /// Group.
        group: Option<String>,
    },
    /// Remove a contact.
    RemoveContact(BareJid),
    /// Accept a subscription request.
    Authorize(BareJid),
    /// Refuse a subscription request (the requester is told).
    Deny(BareJid),
    /// Join or create a room.
    JoinRoom {
        /// `room@conference.server`.
        room: BareJid,
        /// Our nickname.
        nick: String,
        /// Room password.
        password: Option<String>,
    },
    /// Leave a room.
    LeaveRoom(BareJid),
    /// The user took part in a conversation with this address: what it sends is kept
    /// like a contact's (see [`ChatCore::engage`]).
    Engage(BareJid),
    /// Go offline and stop.
    Stop,
}

/// Sends commands to a running account.
#[derive(Clone)]
pub struct XmppHandle {
    tx: mpsc::UnboundedSender<XmppCommand>,
    done: tokio::sync::watch::Receiver<bool>,
}

impl XmppHandle {
    /// Sends a command; ignored once the account has stopped.
    pub fn command(&self, c: XmppCommand) {
        let _ = self.tx.send(c);
    }

    /// A handle to no server: its commands come out of the returned receiver, and it
    /// counts as stopped. For driving what sits above an account (the chat core)
    /// without a network.
    pub fn detached() -> (XmppHandle, mpsc::UnboundedReceiver<XmppCommand>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (_, done) = tokio::sync::watch::channel(true);
        (XmppHandle { tx, done }, rx)
    }

    /// Resolves once the account's task has ended (after [`XmppCommand::Stop`], it
    /// says goodbye to the server first). Await it before stopping the runtime, or the
    /// stream's own tasks may vanish under it.
    pub async fn stopped(&self) {
        let mut done = self.done.clone();
        let _ = done.wait_for(|d| *d).await;
    }
}

enum Internal {
    Delivered(String),
    Permanent(String),
}

/// Starts the account: logs in (reporting a wrong password or certificate at once),
/// then keeps the session up until stopped.
pub fn start(
    connector: HushConnector,
    jid: BareJid,
    password: String,
) -> (XmppHandle, mpsc::Receiver<XmppEvent>) {
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE);
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        run(connector, jid, password, cmd_rx, ev_tx).await;
        let _ = done_tx.send(true);
    });
    (
        XmppHandle {
            tx: cmd_tx,
            done: done_rx,
        },
        ev_rx,
    )
}

fn id_prefix() -> String {
    let mut b = [0u8; 6];
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn run(
    connector: HushConnector,
    jid: BareJid,
    password: String,
    mut commands: mpsc::UnboundedReceiver<XmppCommand>,
    events: mpsc::Sender<XmppEvent>,
) {
    let mut core = ChatCore::new(jid.clone(), id_prefix());
    let (internal_tx, mut internal) = mpsc::unbounded_channel::<Internal>();

    // Our reconnector: like tokio-xmpp's, but a refused login ends the stream instead of
    // retrying forever, and retries start fast so a restarted server is back at once.
    //
    // Prosody 0.12 answers a resumption attempt for a session it no longer knows (after a
    // restart) with <failed/> lacking the 'h' attribute, which xmpp-parsers refuses; the
    // stream then dies and tokio-xmpp tries to resume again, forever. So when the stream
    // we handed out never came online, the next one is offered without stream
    // management: a fresh session. Our own outbox resends anything unacknowledged.
    let reached_online = Arc::new(AtomicBool::new(true));
    let reconnect_tx = internal_tx.clone();
    let ever_online = Arc::new(AtomicBool::new(false));
    // tokio-xmpp asks for a new connection at once each time one drops; a server that
    // accepts the login and then drops the stream would make that a hot loop of logins.
    // So after a stream that never came online, the next waits, longer each time (reset
    // once online).
    let backoff_ms = Arc::new(AtomicU64::new(0));
    let online_at: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    // Streams handed out in a row after one that never came online.
    let unproductive_streams = Arc::new(AtomicU32::new(0));
    let (c, j, p, ro, ever, backoff, unproductive, since) = (
        connector.clone(),
        jid.clone(),
        password.clone(),
        reached_online.clone(),
        ever_online.clone(),
        backoff_ms.clone(),
        unproductive_streams.clone(),
        online_at.clone(),
    );
    let reconnector = Box::new(
        move |_: Option<String>, slot: oneshot::Sender<Connection>| {
            let (c, j, p, report, ro, ever, backoff, unproductive, online_at) = (
                c.clone(),
                j.clone(),
                p.clone(),
                reconnect_tx.clone(),
                ro.clone(),
                ever.clone(),
                backoff.clone(),
                unproductive.clone(),
                since.clone(),
            );
            tokio::spawn(async move {
                // A fresh start, or a session that stayed up a while, reconnects at once;
                // after one that never came online or dropped soon after, the next waits,
                // longer each time.
                let steady = ro.load(Ordering::SeqCst)
                    && online_at
                        .lock()
                        .map(|t| t.is_none_or(|t| t.elapsed() >= STEADY))
                        .unwrap_or(true);
                if steady {
                    backoff.store(0, Ordering::SeqCst);
                } else {
                    let wait = backoff
                        .load(Ordering::SeqCst)
                        .max(FIRST_RETRY.as_millis() as u64);
                    backoff.store(
                        (wait * 2).min(MAX_BACKOFF.as_millis() as u64),
                        Ordering::SeqCst,
                    );
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                }
                let mut delay = FIRST_RETRY;
                let mut refusals = 0;
                loop {
                    let attempt = async {
                        // Two streams in a row that never came online: the first may only
                        // have failed to resume a session the server lost, the second
                        // was fresh. Ask on a connection of our own why.
                        if !ro.load(Ordering::SeqCst) && unproductive.load(Ordering::SeqCst) >= 1 {
                            check_session(&c, &j, &p).await?;
                        }
                        login_stream(&c, &j, &p).await
                    }
                    .await;
                    match attempt {
                        Ok((mut features, stream, _security)) => {
                            if !ro.swap(false, Ordering::SeqCst) {
                                features.stream_management = None;
                                unproductive.fetch_add(1, Ordering::SeqCst);
                            }
                            let _ = slot.send(Connection {
                                stream,
                                features,
                                identity: Jid::from(j.clone()),
                            });
                            return;
                        }
                        // A server restarting answers logins before it has loaded its
                        // accounts (ejabberd says "Invalid username or password"): a
                        // password that worked in this run is tried a few more times,
                        // slowly, before the account stops.
                        Err(SignalingError::AuthFailed)
                            if ever.load(Ordering::SeqCst) && refusals < AUTH_RETRIES =>
                        {
                            tracing::debug!("XMPP login refused after a reconnect; trying again");
                            tokio::time::sleep(MAX_RETRY * 2u32.pow(refusals)).await;
                            refusals += 1;
                        }
                        Err(e) if e.is_permanent() => {
                            let _ = report.send(Internal::Permanent(e.to_string()));
                            // The driver ends the stream. The slot is not dropped:
                            // tokio-xmpp's worker panics when it is (a message on the
                            // terminal); it ends with the stream instead.
                            std::mem::forget(slot);
                            return;
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, ?delay, "XMPP reconnect failed");
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(MAX_RETRY);
                        }
                    }
                }
            });
        },
    );
    let stream = StanzaStream::new(reconnector, 64);
    let (sender, mut receiver) = stream.split();
    let mut acked = false;
    let mut backlog = Backlog::default();
    loop {
        backlog.fill(&mut core, &events);
        let reading = backlog.events.len() < BACKLOG;
        tokio::select! {
            permit = events.reserve(), if !backlog.events.is_empty() => match permit {
                Ok(permit) => {
                    if let Some(e) = backlog.events.pop_front() {
                        permit.send(e);
                    }
                }
                Err(_) => {
                    backlog.closed = true;
                    backlog.events.clear();
                }
            },
            cmd = commands.recv() => {
                let Some(cmd) = cmd else { break };
                match cmd {
                    XmppCommand::Stop => {
                        core.set_show(Show::Offline);
                        pump_out(&mut core, &sender, acked, &internal_tx).await;
                        break;
                    }
                    other => apply(&mut core, other),
                }
            }
            ev = receiver.next(), if reading => {
                match ev {
                    Some(Event::Stanza(s)) => core.handle(s),
                    Some(Event::Stream(StreamEvent::Reset { features, .. })) => {
                        reached_online.store(true, Ordering::SeqCst);
                        ever_online.store(true, Ordering::SeqCst);
                        unproductive_streams.store(0, Ordering::SeqCst);
                        if let Ok(mut t) = online_at.lock() {
                            *t = Some(Instant::now());
                        }
                        acked = features.stream_management.is_some();
                        core.online(false);
                    }
                    Some(Event::Stream(StreamEvent::Resumed)) => {
                        reached_online.store(true, Ordering::SeqCst);
                        ever_online.store(true, Ordering::SeqCst);
                        unproductive_streams.store(0, Ordering::SeqCst);
                        if let Ok(mut t) = online_at.lock() {
                            *t = Some(Instant::now());
                        }
                        core.online(true);
                    }
                    Some(Event::Stream(StreamEvent::Suspended)) => core.offline("connection lost; reconnecting".into(), false),
                    None => {
                        // The stream ended: a permanent error was reported, or it failed.
                        let mut reason = "the connection ended".to_owned();
                        while let Ok(msg) = internal.try_recv() {
                            if let Internal::Permanent(r) = msg {
                                reason = r;
                            }
                        }
                        core.offline(reason, true);
                        backlog.finish(&mut core, &events).await;
                        return;
                    }
                }
            }
            msg = internal.recv() => match msg {
                Some(Internal::Delivered(id)) => core.delivered(&id),
                Some(Internal::Permanent(reason)) => {
                    core.offline(reason, true);
                    backlog.finish(&mut core, &events).await;
                    return;
                }
                None => {}
            },
        }
        pump_out(&mut core, &sender, acked, &internal_tx).await;
    }
    backlog.finish(&mut core, &events).await;
    let stream = StanzaStream::reunite(sender, receiver);
    let _ = tokio::time::timeout(Duration::from_secs(3), stream.close()).await;
}

fn apply(core: &mut ChatCore, cmd: XmppCommand) {
    match cmd {
        XmppCommand::Send { to, body, id } => {
            core.send_message(to, body, id);
        }
        XmppCommand::SendRoom { room, body } => {
            core.send_room(room, body);
        }
        XmppCommand::SetShow(s) => core.set_show(s),
        XmppCommand::AddContact { jid, name, group } => core.add_contact(jid, name, group),
        XmppCommand::UpdateContact { jid, name, group } => core.set_contact(jid, name, group),
        XmppCommand::RemoveContact(jid) => core.remove_contact(jid),
        XmppCommand::Authorize(jid) => core.authorize(jid),
        XmppCommand::Deny(jid) => core.deny(jid),
        XmppCommand::JoinRoom {
            room,
            nick,
            password,
        } => core.join_room(room, nick, password),
        XmppCommand::LeaveRoom(room) => core.leave_room(room),
        XmppCommand::Engage(jid) => core.engage(jid),
        XmppCommand::Stop => {}
    }
}

async fn pump_out(
    core: &mut ChatCore,
    sender: &tokio_xmpp::stanzastream::StanzaSender,
    acked: bool,
    internal: &mpsc::UnboundedSender<Internal>,
) {
    while let Some(Outbound { stanza, track }) = core.poll_outbound() {
        let mut token = sender.send(Box::new(stanza)).await;
        if let Some(id) = track {
            let tx = internal.clone();
            // With stream management the server's ack proves receipt; without it, having
            // written the stanza is the best we know.
            let stage = if acked {
                StanzaStage::Acked
            } else {
                StanzaStage::Sent
            };
            tokio::spawn(async move {
                if let Some(state) = token.wait_for(stage).await {
                    let ok = matches!(
                        state,
                        tokio_xmpp::stanzastream::StanzaState::Acked { .. }
                            | tokio_xmpp::stanzastream::StanzaState::Sent { .. }
                    );
                    if ok {
                        let _ = tx.send(Internal::Delivered(id));
                    }
                }
            });
        }
    }
}

/// Events the core produced that the consumer has not taken yet.
#[derive(Default)]
struct Backlog {
    events: VecDeque<XmppEvent>,
    /// Nobody listens any more: events are dropped.
    closed: bool,
}

impl Backlog {
    /// Takes the core's events and moves as many as fit into the channel.
    fn fill(&mut self, core: &mut ChatCore, tx: &mpsc::Sender<XmppEvent>) {
        while let Some(e) = core.poll_event() {
            if !self.closed {
                self.events.push_back(e);
            }
        }
        while let Some(e) = self.events.pop_front() {
            match tx.try_send(e) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(e)) => {
                    self.events.push_front(e);
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.closed = true;
                    self.events.clear();
                    return;
                }
            }
        }
    }

    /// Hands over the last events, waiting (bounded) for the consumer.
    async fn finish(&mut self, core: &mut ChatCore, tx: &mpsc::Sender<XmppEvent>) {
        self.fill(core, tx);
        let rest = std::mem::take(&mut self.events);
        let deliver = async {
            for e in rest {
                if tx.send(e).await.is_err() {
                    break;
                }
            }
        };
        if tokio::time::timeout(LAST_EVENTS, deliver).await.is_err() {
            tracing::debug!("the account's last events were not taken in time");
        }
    }
}
