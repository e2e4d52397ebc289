//! Chat: one XMPP account driver per connected account, and the conversations, rooms,
//! contacts and requests they produce, as the snapshot shows them. Messages are logged
//! to the (sealed) history only where the user turned history on. What senders can
//! make the core keep is bounded (see `limits`), and each account's events come in
//! through a small window, so a flood waits at the server instead of in memory.

#[cfg(test)]
mod flood_tests;
mod limits;
mod otr;
mod worker;

pub(crate) use otr::{FINGERPRINTS_SECRET, KEYS_SECRET, POLICIES_SECRET, Stored};

use crate::command::{Reply, RequestAnswer};
use crate::error::{CoreError, Result};
use crate::event::Event;
use crate::model::{AccountConfig, AccountId, AccountSettings, OtrPolicySetting, XmppSettings};
use crate::secret::Secret;
use crate::security::ChatSecurity;
use crate::snapshot::{
    AccountStatus, ChatLine, ChatView, ContactView, KnownFingerprintView, OtrKeyView, Presence,
    RequestView, RoomView, SmpView, Subscription,
};
use hush_signaling::xmpp::account::{self, XmppCommand, XmppHandle};
use hush_signaling::xmpp::chat::{Contact, Show, XmppEvent};
use hush_signaling::xmpp::{BareJid, HushConnector, Route, Trust, parse_fingerprint};
use limits::{MAX_BYTES, push_line};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// Events of one account in flight to the core task; the account reads no more from
/// its server until the core has handled some.
const INPUT_WINDOW: usize = 64;

/// Inputs to the core task for the chat layer.
pub(crate) enum ChatInput {
    /// An XMPP account's event; the permit frees a place in the account's window when
    /// the input has been handled (dropped).
    Xmpp(AccountId, XmppEvent, OwnedSemaphorePermit),
    /// An OTR key made off the core task.
    Key(otr::KeyMade),
}

pub(crate) struct Conversation {
    security: ChatSecurity,
    peer_fingerprint: Option<String>,
    fingerprint_changed: bool,
    smp: Option<SmpView>,
    held: usize,
    lines: Arc<Vec<ChatLine>>,
    /// The user wrote in it or acted on its privacy.
    engaged: bool,
    /// OTR knows the peer as someone the user knows (engaged, verified or in the
    /// fingerprints file).
    known: bool,
    /// When it last changed (the layer's tick).
    last_active: u64,
}

impl Conversation {
    fn new() -> Conversation {
        Conversation {
            security: ChatSecurity::NotPrivate,
            peer_fingerprint: None,
            fingerprint_changed: false,
            smp: None,
            held: 0,
            lines: Arc::default(),
            engaged: false,
            known: false,
            last_active: 0,
        }
    }
}

struct RoomState {
    nick: String,
    joined: bool,
    occupants: Vec<String>,
    lines: Arc<Vec<ChatLine>>,
}

struct Account {
    handle: XmppHandle,
    jid: BareJid,
    contacts: BTreeMap<String, ContactView>,
    otr_policy: OtrPolicySetting,
}

/// All chat accounts of the phone.
pub(crate) struct ChatLayer {
    input: mpsc::UnboundedSender<ChatInput>,
    accounts: BTreeMap<AccountId, Account>,
    chats: BTreeMap<(AccountId, String), Conversation>,
    rooms: BTreeMap<(AccountId, String), RoomState>,
    requests: BTreeMap<(AccountId, String), bool>,
    /// Requests, oldest first.
    request_order: VecDeque<(AccountId, String)>,
    otr: otr::Otr,
    /// Orders conversations by activity.
    tick: u64,
    /// The user was told that new senders' messages are not shown (no room).
    conversations_full: bool,
}

/// Snapshot parts the chat layer owns.
pub(crate) struct ChatViews {
    pub(crate) contacts: Vec<ContactView>,
    pub(crate) chats: Vec<ChatView>,
    pub(crate) rooms: Vec<RoomView>,
    pub(crate) requests: Vec<RequestView>,
    pub(crate) otr_keys: Vec<OtrKeyView>,
    pub(crate) known_fingerprints: Vec<KnownFingerprintView>,
}

/// A line to log in the history: (account, peer, line).
pub(crate) type Loggable = (AccountId, String, ChatLine);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn jid(s: &str) -> Result<BareJid> {
    s.trim()
        .parse::<BareJid>()
        .map_err(|e| CoreError::InvalidInput(format!("{s:?} is not a valid XMPP address: {e}")))
}

/// The connector an account's settings describe.
pub(crate) fn connector(address: &str, settings: &XmppSettings) -> Result<HushConnector> {
    let route = match &settings.server {
        Some(hp) => {
            let (host, port) = hp
                .rsplit_once(':')
                .and_then(|(h, p)| p.parse::<u16>().ok().map(|p| (h.to_owned(), p)))
                .unwrap_or((hp.clone(), 5222));
            Route::Direct { host, port }
        }
        None => {
            if address.split_once('@').is_none() {
                return Err(CoreError::InvalidInput(format!(
                    "{address} is not user@domain"
                )));
            }
            Route::Srv
        }
    };
    let trust = match &settings.pinned_cert_sha256 {
        Some(fp) => Trust::Pinned(
            parse_fingerprint(fp).map_err(|e| CoreError::InvalidInput(e.to_string()))?,
        ),
        None => Trust::SystemRoots,
    };
    Ok(HushConnector::new(
        route,
        trust,
        settings.socks5_proxy.clone(),
    ))
}

fn presence_of(show: Show) -> Presence {
    match show {
        Show::Available => Presence::Available,
        Show::Away => Presence::Away,
        Show::DoNotDisturb => Presence::DoNotDisturb,
        Show::Offline => Presence::Offline,
    }
}

impl ChatLayer {
    pub(crate) fn new(input: mpsc::UnboundedSender<ChatInput>) -> ChatLayer {
        Self::with_otr(input, otr::Otr::new())
    }

    fn with_otr(input: mpsc::UnboundedSender<ChatInput>, otr: otr::Otr) -> ChatLayer {
        ChatLayer {
            input,
            accounts: BTreeMap::new(),
            chats: BTreeMap::new(),
            rooms: BTreeMap::new(),
            requests: BTreeMap::new(),
            request_order: VecDeque::new(),
            otr,
            tick: 0,
            conversations_full: false,
        }
    }

    /// OTR data from the vault is loaded (needed before any chat account connects).
    pub(crate) fn otr_loaded(&self) -> bool {
        self.otr.is_loaded()
    }

    /// What must be written back to the vault now, if anything.
    pub(crate) async fn otr_to_save(&mut self) -> Option<otr::ToSave> {
        self.otr.take_changes().await
    }

    /// Contacts, conversations, rooms and requests for the snapshot.
    pub(crate) fn views(&self) -> ChatViews {
        let contacts = self
            .accounts
            .values()
            .flat_map(|a| a.contacts.values().cloned())
            .collect();
        let chats = self
            .chats
            .iter()
            .map(|((account, peer), c)| ChatView {
                account: *account,
                peer: peer.clone(),
                security: c.security,
                fingerprint_changed: c.fingerprint_changed,
                peer_fingerprint: c.peer_fingerprint.clone(),
                smp: c.smp.clone(),
                policy: self.policy_for(*account, peer),
                held: c.held,
                lines: c.lines.clone(),
            })
            .collect();
        let rooms = self
            .rooms
            .iter()
            .map(|((account, room), r)| RoomView {
                account: *account,
                room: room.clone(),
                nick: r.nick.clone(),
                joined: r.joined,
                occupants: r.occupants.clone(),
                lines: r.lines.clone(),
            })
            .collect();
        let requests = self
            .requests
            .iter()
            .map(|((account, from), ignored)| RequestView {
                account: *account,
                from: from.clone(),
                ignored: *ignored,
            })
            .collect();
        ChatViews {
            contacts,
            chats,
            rooms,
            requests,
            otr_keys: self.otr.key_views(),
            known_fingerprints: self.otr.known(),
        }
    }

    /// Logs in an XMPP account (the vault's OTR data must be loaded).
    pub(crate) async fn connect(
        &mut self,
        config: &AccountConfig,
        password: Secret,
        events: &mut Vec<Event>,
    ) -> Result<()> {
        let AccountSettings::Xmpp(settings) = &config.settings else {
            return Err(CoreError::InvalidInput("not an XMPP account".into()));
        };
        if self.accounts.contains_key(&config.id) {
            return Ok(());
        }
        // No OTR, no chat: never a chat that could only be unencrypted.
        self.otr.available()?;
        if !self.otr.is_loaded() {
            return Err(CoreError::Locked);
        }
        let me = jid(&config.address)?;
        let (handle, mut rx) = account::start(
            connector(&config.address, settings)?,
            me.clone(),
            password.expose().to_owned(),
        );
        let input = self.input.clone();
        let id = config.id;
        let window = Arc::new(Semaphore::new(INPUT_WINDOW));
        tokio::spawn(async move {
            loop {
                let Ok(place) = window.clone().acquire_owned().await else {
                    break;
                };
                let Some(ev) = rx.recv().await else { break };
                if input.send(ChatInput::Xmpp(id, ev, place)).is_err() {
                    break;
                }
            }
        });
        self.accounts.insert(
            config.id,
            Account {
                handle,
                jid: me.clone(),
                contacts: BTreeMap::new(),
                otr_policy: settings.otr_policy,
            },
        );
        events.push(Event::AccountStatus {
            account: config.id,
            status: AccountStatus::Connecting,
        });
        self.otr_attach(config.id, &me.to_string(), settings.otr_policy, events)
            .await
    }

    /// Logs out.
    pub(crate) fn disconnect(&mut self, account: AccountId) -> bool {
        match self.accounts.remove(&account) {
            Some(a) => {
                a.handle.command(XmppCommand::Stop);
                self.otr_detach(account);
                true
            }
            None => false,
        }
    }

    fn account(&self, account: AccountId) -> Result<&Account> {
        self.accounts.get(&account).ok_or_else(|| {
            CoreError::InvalidInput(format!(
                "account {account} is not connected; connect it first"
            ))
        })
    }

    /// Runs a roster, presence or room command.
    pub(crate) fn command(&mut self, account: AccountId, cmd: XmppCommand) -> Result<Reply> {
        self.account(account)?.handle.command(cmd);
        Ok(Reply::Done)
    }

    pub(crate) fn contact_command(
        &mut self,
        account: AccountId,
        address: &str,
        make: impl FnOnce(BareJid) -> XmppCommand,
    ) -> Result<Reply> {
        let j = jid(address)?;
        self.command(account, make(j))
    }

    /// Authorize, deny or ignore a subscription request.
    pub(crate) fn answer(
        &mut self,
        account: AccountId,
        from: &str,
        answer: RequestAnswer,
    ) -> Result<Reply> {
        let who = jid(from)?;
        let key = (account, who.to_string());
        match answer {
            RequestAnswer::Ignore => {
                let entry = self
                    .requests
                    .get_mut(&key)
                    .ok_or_else(|| CoreError::InvalidInput(format!("{from} has not asked")))?;
                *entry = true;
                return Ok(Reply::Done);
            }
            RequestAnswer::Authorize => self.command(account, XmppCommand::Authorize(who))?,
            RequestAnswer::Deny => self.command(account, XmppCommand::Deny(who))?,
        };
        self.remove_request(&key);
        Ok(Reply::Done)
    }

    /// Joins a room.
    pub(crate) fn join(
        &mut self,
        account: AccountId,
        room: &str,
        nick: String,
        password: Option<Secret>,
    ) -> Result<Reply> {
        let r = jid(room)?;
        if r.node().is_none() {
            return Err(CoreError::InvalidInput(format!(
                "{room} is not room@conference.server"
            )));
        }
        if nick.trim().is_empty() || nick.len() > 64 {
            return Err(CoreError::InvalidInput(
                "a nickname is 1 to 64 characters".into(),
            ));
        }
        self.command(
            account,
            XmppCommand::JoinRoom {
                room: r.clone(),
                nick: nick.clone(),
                password: password.map(|p| p.expose().to_owned()),
            },
        )?;
        self.rooms.insert(
            (account, r.to_string()),
            RoomState {
                nick,
                joined: false,
                occupants: Vec::new(),
                lines: Arc::default(),
            },
        );
        Ok(Reply::Done)
    }

    /// Leaves a room.
    pub(crate) fn leave(&mut self, account: AccountId, room: &str) -> Result<Reply> {
        let r = jid(room)?;
        self.rooms.remove(&(account, r.to_string()));
        self.command(account, XmppCommand::LeaveRoom(r))
    }

    fn contact_view(account: AccountId, c: &Contact, presence: Presence) -> ContactView {
        ContactView {
            account,
            address: c.jid.to_string(),
            alias: c.name.clone(),
            group: c.group.clone(),
            presence,
            subscription: if c.waiting {
                Subscription::WaitingForAuthorization
            } else if c.we_see_them {
                Subscription::Authorized
            } else {
                Subscription::None
            },
        }
    }

    /// Turns an input into state, events and lines to log.
    pub(crate) async fn input(
        &mut self,
        input: ChatInput,
        events: &mut Vec<Event>,
        log: &mut Vec<Loggable>,
    ) {
        let (account, ev, place) = match input {
            ChatInput::Xmpp(account, ev, place) => (account, ev, place),
            ChatInput::Key(made) => {
                self.key_made(made, events, log).await;
                return;
            }
        };
        if let XmppEvent::Message {
            from,
            id,
            body,
            delayed,
        } = ev
        {
            if self.accounts.contains_key(&account) {
                let message = otr::Received {
                    from: from.to_string(),
                    id,
                    body,
                    delayed,
                };
                // Without our key an exchange the sender starts would fail: what it
                // sends waits (holding its place in the window) until the key is made.
                if let Some((message, _place)) = self.otr.hold_until_key(account, message, place) {
                    self.receive(account, message, events, log).await;
                }
            }
            return;
        }
        let Some(acc) = self.accounts.get_mut(&account) else {
            return;
        };
        match ev {
            XmppEvent::Online { .. } => events.push(Event::AccountStatus {
                account,
                status: AccountStatus::Online,
            }),
            XmppEvent::Offline { reason, permanent } => {
                let status = if permanent {
                    AccountStatus::Error(reason)
                } else {
                    AccountStatus::Retrying(reason)
                };
                if permanent {
                    self.accounts.remove(&account);
                    self.otr_detach(account);
                }
                events.push(Event::AccountStatus { account, status });
            }
            XmppEvent::Roster(list) => {
                let old = std::mem::take(&mut acc.contacts);
                for c in &list {
                    let presence = old
                        .get(&c.jid.to_string())
                        .map(|v| v.presence)
                        .unwrap_or(Presence::Offline);
                    let view = Self::contact_view(account, c, presence);
                    acc.contacts.insert(view.address.clone(), view.clone());
                    events.push(Event::Contact {
                        account,
                        contact: view,
                    });
                }
            }
            XmppEvent::ContactUpdated(c) => {
                let presence = acc
                    .contacts
                    .get(&c.jid.to_string())
                    .map(|v| v.presence)
                    .unwrap_or(Presence::Offline);
                let view = Self::contact_view(account, &c, presence);
                acc.contacts.insert(view.address.clone(), view.clone());
                events.push(Event::Contact {
                    account,
                    contact: view,
                });
            }
            XmppEvent::ContactRemoved(j) => {
                acc.contacts.remove(&j.to_string());
                events.push(Event::ContactRemoved {
                    account,
                    address: j.to_string(),
                });
            }
            XmppEvent::Presence { jid, show } => {
                if let Some(v) = acc.contacts.get_mut(&jid.to_string()) {
                    v.presence = presence_of(show);
                    events.push(Event::Contact {
                        account,
                        contact: v.clone(),
                    });
                }
            }
            XmppEvent::SubscriptionRequest { from } => {
                if self.add_request(account, from.to_string(), events) {
                    events.push(Event::SubscriptionRequest {
                        account,
                        from: from.to_string(),
                    });
                }
            }
            XmppEvent::Queued {
                to,
                id,
                body,
                room: true,
            } => {
                let line = ChatLine {
                    id,
                    sender: acc.jid.to_string(),
                    from_me: true,
                    body,
                    at_unix_ms: now_ms(),
                    delivered: false,
                    delayed: false,
                    encrypted: false,
                    held: false,
                    notice: false,
                };
                if let Some(r) = self.rooms.get_mut(&(account, to.to_string())) {
                    line_sender_nick(&mut r.lines, line.clone(), &r.nick);
                    events.push(Event::RoomLine {
                        account,
                        room: to.to_string(),
                        line,
                    });
                }
            }
            XmppEvent::RequestDropped { from } => {
                self.request_dropped(account, from.to_string(), events);
            }
            // 1:1 lines are made when the user sends (OTR may turn one into several stanzas).
            XmppEvent::Queued { .. } => {}
            XmppEvent::Delivered { id } => {
                if let Some((a, peer, line)) = self.otr.delivered(&id) {
                    if let Some(conv) = self.chats.get_mut(&(a, peer.clone()))
                        && let Some(pos) =
                            conv.lines.iter().rposition(|l| l.from_me && l.id == line)
                    {
                        Arc::make_mut(&mut conv.lines)[pos].delivered = true;
                        events.push(Event::ChatDelivered {
                            account: a,
                            peer,
                            id: line,
                        });
                    }
                    return;
                }
                for r in self.rooms.values_mut() {
                    if let Some(pos) = r.lines.iter().rposition(|l| l.from_me && l.id == id) {
                        Arc::make_mut(&mut r.lines)[pos].delivered = true;
                    }
                }
            }
            XmppEvent::Message { .. } => {}
            XmppEvent::RoomJoined { room, nick } => {
                if let Some(r) = self.rooms.get_mut(&(account, room.to_string())) {
                    r.joined = true;
                    r.nick = nick;
                }
                events.push(Event::RoomJoined {
                    account,
                    room: room.to_string(),
                });
            }
            XmppEvent::RoomProtected { room } => {
                let line = otr::notice(
                    "You created this room; it now requires the password you gave.".into(),
                );
                if let Some(r) = self.rooms.get_mut(&(account, room.to_string())) {
                    push_line(&mut r.lines, line.clone(), MAX_BYTES);
                }
                events.push(Event::RoomLine {
                    account,
                    room: room.to_string(),
                    line,
                });
            }
            XmppEvent::RoomOccupants { room, occupants } => {
                if let Some(r) = self.rooms.get_mut(&(account, room.to_string())) {
                    r.occupants = occupants.clone();
                }
                events.push(Event::RoomOccupants {
                    account,
                    room: room.to_string(),
                    occupants,
                });
            }
            XmppEvent::RoomMessage {
                room,
                nick,
                id,
                body,
                delayed,
            } => {
                let line = ChatLine {
                    id,
                    sender: nick,
                    from_me: false,
                    body,
                    at_unix_ms: now_ms(),
                    delivered: true,
                    delayed,
                    encrypted: false,
                    held: false,
                    notice: false,
                };
                if let Some(r) = self.rooms.get_mut(&(account, room.to_string())) {
                    push_line(&mut r.lines, line.clone(), MAX_BYTES);
                }
                events.push(Event::RoomLine {
                    account,
                    room: room.to_string(),
                    line,
                });
            }
            XmppEvent::RoomLeft { room } => {
                self.rooms.remove(&(account, room.to_string()));
            }
            XmppEvent::Error { reason } => events.push(Event::ChatError { account, reason }),
        }
    }

    /// Stops every account and waits (bounded) until each has said goodbye.
    pub(crate) async fn shutdown(&mut self) {
        let accounts = std::mem::take(&mut self.accounts);
        for a in accounts.values() {
            a.handle.command(XmppCommand::Stop);
        }
        let all = futures_join(accounts.values().map(|a| a.handle.clone()).collect());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(4), all).await;
    }
}

async fn futures_join(handles: Vec<XmppHandle>) {
    for h in handles {
        h.stopped().await;
    }
}

fn line_sender_nick(lines: &mut Arc<Vec<ChatLine>>, mut line: ChatLine, nick: &str) {
    line.sender = nick.to_owned();
    push_line(lines, line, MAX_BYTES);
}
