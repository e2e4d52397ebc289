//! The chat logic of one XMPP account, sans-IO: stanzas and commands in, stanzas and
//! events out. It keeps the roster, presence, pending subscription requests, joined
//! rooms and an outbox that delivers every message exactly once across reconnects
//! (resent with the same id until the server acknowledges it; receivers drop ids they
//! have already seen). The driver only moves stanzas between this and the stream.
//!
//! Everything kept per sender is bounded, whatever a hostile server or sender does:
//! message ids are remembered as 64-bit keyed hashes for at most [`MAX_SENDERS`]
//! strangers (the least recently heard from are forgotten), presence is tracked only for
//! roster contacts, and pending IQs and subscription requests are capped (oldest out,
//! and a dropped request is reported). Senders the user knows — roster contacts, people
//! the user wrote to ([`ChatCore::engage`]), joined rooms — are outside those caps:
//! their message ids and requests are never pushed out by strangers.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, RandomState};
use tokio_xmpp::Stanza;
use tokio_xmpp::jid::{BareJid, FullJid, Jid, ResourcePart};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::delay::Delay;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::{Message, MessageType};
use tokio_xmpp::parsers::muc::{Muc, MucUser};
use tokio_xmpp::parsers::presence::{Presence, Show as XmppShow, Type as PresenceType};
use tokio_xmpp::parsers::roster::{Ask, Group, Item, Roster, Subscription};
use tokio_xmpp::parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};

mod outbox;
mod rooms;
mod roster;
use roster::contact_of;
#[cfg(test)]
mod tests;

/// Longest message body we send or show; longer incoming bodies are dropped.
pub const MAX_BODY: usize = 64 * 1024;
/// Message ids remembered per peer for duplicate suppression.
const SEEN_IDS: usize = 512;
/// Strangers whose message ids we remember; beyond this the least recently heard from
/// is forgotten (a duplicate from it may then be shown twice). Senders the user knows
/// are not counted.
pub const MAX_SENDERS: usize = 1024;
/// People the user wrote to that are remembered as known; beyond this the oldest go
/// back to being strangers.
const MAX_ENGAGED: usize = 4_096;
/// Contacts we keep; a server pushing more is ignored beyond this.
const MAX_ROSTER: usize = 20_000;
/// Online resources tracked per contact.
const MAX_RESOURCES: usize = 64;
/// Our IQs awaiting an answer; beyond this the oldest is given up.
pub const MAX_PENDING_IQS: usize = 256;
/// Subscription requests waiting for the user; beyond this the oldest from a stranger
/// is dropped, with [`XmppEvent::RequestDropped`] (its sender can ask again). Known
/// senders' requests do not count and are never dropped.
pub const MAX_REQUESTS: usize = 256;

/// Availability, ours or a contact's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    /// Online.
    Available,
    /// Away.
    Away,
    /// Do not disturb.
    DoNotDisturb,
    /// Offline.
    Offline,
}

/// A roster entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    /// The contact's bare JID.
    pub jid: BareJid,
    /// Alias chosen by the user.
    pub name: Option<String>,
    /// Group (the first, if the server stores several).
    pub group: Option<String>,
    /// We receive their presence.
    pub we_see_them: bool,
    /// They receive ours.
    pub they_see_us: bool,
    /// We asked to see their presence and they have not answered.
    pub waiting: bool,
}

/// What the account reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XmppEvent {
    /// One of our messages was queued (shown at once; `Delivered` follows).
    Queued {
        /// Recipient (contact or room).
        to: BareJid,
        /// Its id.
        id: String,
        /// The text.
        body: String,
        /// Sent to a room.
        room: bool,
    },
    /// Logged in (again). `resumed`: the previous session continued without loss.
    Online {
        /// Stream management resumed the old session.
        resumed: bool,
    },
    /// The connection dropped; the driver is reconnecting unless `permanent`.
    Offline {
        /// Why.
        reason: String,
        /// The user must fix something (password, certificate) first.
        permanent: bool,
    },
    /// The whole roster (after login).
    Roster(Vec<Contact>),
    /// One roster entry was added or changed.
    ContactUpdated(Contact),
    /// One roster entry was removed.
    ContactRemoved(BareJid),
    /// A contact's availability changed.
    Presence {
        /// Who.
        jid: BareJid,
        /// Their best availability over all resources.
        show: Show,
    },
    /// Someone asks to see our presence; answer with authorize, deny or ignore.
    SubscriptionRequest {
        /// Who asks.
        from: BareJid,
    },
    /// A stranger's subscription request was dropped unanswered to make room for newer
    /// ones (or was not listed, when only known senders' requests wait): tell the user,
    /// who may ask them to ask again.
    RequestDropped {
        /// Whose request.
        from: BareJid,
    },
    /// A chat message arrived (each id once).
    Message {
        /// Sender.
        from: BareJid,
        /// Its id.
        id: String,
        /// The text.
        body: String,
        /// It was stored by the server while we were offline.
        delayed: bool,
    },
    /// The server accepted one of our messages.
    Delivered {
        /// The message id.
        id: String,
    },
    /// We are in a room.
    RoomJoined {
        /// The room.
        room: BareJid,
        /// Our nickname.
        nick: String,
    },
    /// A room we created now requires the password we joined with.
    RoomProtected {
        /// The room.
        room: BareJid,
    },
    /// Who is in a room now.
    RoomOccupants {
        /// The room.
        room: BareJid,
        /// Nicknames.
        occupants: Vec<String>,
    },
    /// A room message (each id once; our own echoes are not repeated).
    RoomMessage {
        /// The room.
        room: BareJid,
        /// Who said it.
        nick: String,
        /// Its id.
        id: String,
        /// The text.
        body: String,
        /// From the room's history.
        delayed: bool,
    },
    /// We left a room.
    RoomLeft {
        /// The room.
        room: BareJid,
    },
    /// The server refused something; the text is for the user.
    Error {
        /// What was refused and why.
        reason: String,
    },
}

#[derive(Debug, Clone)]
struct Outgoing {
    id: String,
    to: BareJid,
    body: String,
    room: bool,
}

#[derive(Debug, Clone)]
struct Room {
    nick: String,
    password: Option<String>,
    joined: bool,
    occupants: BTreeSet<String>,
}

enum IqPurpose {
    RosterGet,
    RosterSet(BareJid),
    RoomConfig(BareJid),
}

/// A stanza for the driver to send; `track` is the message id whose delivery we need to
/// know about.
pub struct Outbound {
    /// The stanza.
    pub stanza: Stanza,
    /// Report delivery of this message id back through [`ChatCore::delivered`].
    pub track: Option<String>,
}

/// How much per-sender state a [`ChatCore`] holds (for tests and diagnostics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracked {
    /// Strangers whose message ids are remembered.
    pub senders: usize,
    /// Known senders whose message ids are remembered.
    pub known_senders: usize,
    /// Message ids remembered over all senders.
    pub message_ids: usize,
    /// Contacts with online resources.
    pub present: usize,
    /// Online resources over all contacts.
    pub resources: usize,
    /// Our IQs awaiting an answer.
    pub pending_iqs: usize,
    /// Subscription requests waiting for the user.
    pub requests: usize,
}

/// Message ids seen per sender, bounded in ids per sender and in strangers.
struct SeenIds {
    /// Senders the user knows: kept while they stay known.
    known: HashMap<BareJid, VecDeque<u64>>,
    /// Strangers: when last heard from, and the ids (keyed hashes) in arrival order.
    by_sender: HashMap<BareJid, (u64, VecDeque<u64>)>,
    /// Strangers by when last heard from.
    order: BTreeMap<u64, BareJid>,
    clock: u64,
    /// Keyed per core, so a sender cannot choose ids that collide.
    hasher: RandomState,
}

/// Adds `h` to a sender's ids; false if it was there.
fn record(ids: &mut VecDeque<u64>, h: u64) -> bool {
    if ids.contains(&h) {
        return false;
    }
    ids.push_back(h);
    if ids.len() > SEEN_IDS {
        ids.pop_front();
    }
    true
}

impl SeenIds {
    fn new() -> SeenIds {
        SeenIds {
            known: HashMap::new(),
            by_sender: HashMap::new(),
            order: BTreeMap::new(),
            clock: 0,
            hasher: RandomState::new(),
        }
    }

    /// Records `id` from `from`, a sender the user knows or not; false if it was seen
    /// already.
    fn remember(&mut self, from: &BareJid, id: &str, known: bool) -> bool {
        let h = self.hasher.hash_one(id);
        if known {
            if !self.known.contains_key(from) {
                // Newly known: what was seen from them as a stranger still counts.
                let ids = match self.by_sender.remove(from) {
                    Some((last, ids)) => {
                        self.order.remove(&last);
                        ids
                    }
                    None => VecDeque::new(),
                };
                self.known.insert(from.clone(), ids);
            }
            return self.known.get_mut(from).is_some_and(|ids| record(ids, h));
        }
        // No longer known (left the roster): a stranger again.
        let before = self.known.remove(from);
        self.clock += 1;
        let now = self.clock;
        if let Some((last, ids)) = self.by_sender.get_mut(from) {
            self.order.remove(last);
            *last = now;
            self.order.insert(now, from.clone());
            return record(ids, h);
        }
        if self.by_sender.len() >= MAX_SENDERS
            && let Some((_, oldest)) = self.order.pop_first()
        {
            self.by_sender.remove(&oldest);
        }
        let mut ids = before.unwrap_or_default();
        let fresh = record(&mut ids, h);
        self.by_sender.insert(from.clone(), (now, ids));
        self.order.insert(now, from.clone());
        fresh
    }

    /// Forgets the ids of senders the user no longer knows.
    fn retain_known(&mut self, known: impl Fn(&BareJid) -> bool) {
        self.known.retain(|j, _| known(j));
    }
}

/// One account's chat state machine.
pub struct ChatCore {
    me: BareJid,
    online: bool,
    show: Show,
    unsent: VecDeque<Outgoing>,
    inflight: BTreeMap<String, Outgoing>,
    seen: SeenIds,
    own_room_ids: VecDeque<String>,
    /// Our pending IQs by their sequence number (ids are `{id_prefix}-{n}`).
    iqs: BTreeMap<u64, IqPurpose>,
    roster: BTreeMap<BareJid, Contact>,
    /// Online resources of roster contacts (resource names as keyed hashes).
    resources: HashMap<BareJid, BTreeMap<u64, Show>>,
    resource_hasher: RandomState,
    /// Subscription requests, oldest first.
    requests: VecDeque<BareJid>,
    /// People the user wrote to (see [`ChatCore::engage`]), and the same oldest first.
    engaged: HashSet<BareJid>,
    engaged_order: VecDeque<BareJid>,
    rooms: BTreeMap<BareJid, Room>,
    next_id: u64,
    id_prefix: String,
    out: VecDeque<Outbound>,
    events: VecDeque<XmppEvent>,
}

impl ChatCore {
    /// A core for `me`; `id_prefix` must differ between sessions (random), so message
    /// ids are unique across restarts.
    pub fn new(me: BareJid, id_prefix: String) -> ChatCore {
        ChatCore {
            me,
            online: false,
            show: Show::Available,
            unsent: VecDeque::new(),
            inflight: BTreeMap::new(),
            seen: SeenIds::new(),
            own_room_ids: VecDeque::new(),
            iqs: BTreeMap::new(),
            roster: BTreeMap::new(),
            resources: HashMap::new(),
            resource_hasher: RandomState::new(),
            requests: VecDeque::new(),
            engaged: HashSet::new(),
            engaged_order: VecDeque::new(),
            rooms: BTreeMap::new(),
            next_id: 0,
            id_prefix,
            out: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    fn new_id(&mut self) -> String {
        self.next_id += 1;
        format!("{}-{}", self.id_prefix, self.next_id)
    }

    /// The sequence number of one of our ids, `None` for anyone else's.
    fn our_seq(&self, id: &str) -> Option<u64> {
        id.strip_prefix(self.id_prefix.as_str())?
            .strip_prefix('-')?
            .parse()
            .ok()
    }

    fn send(&mut self, stanza: impl Into<Stanza>) {
        self.out.push_back(Outbound {
            stanza: stanza.into(),
            track: None,
        });
    }

    fn iq(&mut self, purpose: IqPurpose, iq: impl FnOnce(String) -> Iq) {
        let id = self.new_id();
        self.iqs.insert(self.next_id, purpose);
        while self.iqs.len() > MAX_PENDING_IQS {
            self.iqs.pop_first();
        }
        self.send(iq(id));
    }

    fn answered(&mut self, id: &str) -> Option<IqPurpose> {
        let seq = self.our_seq(id)?;
        self.iqs.remove(&seq)
    }

    /// How much per-sender state is held now.
    pub fn tracked(&self) -> Tracked {
        Tracked {
            senders: self.seen.by_sender.len(),
            known_senders: self.seen.known.len(),
            message_ids: self
                .seen
                .by_sender
                .values()
                .map(|(_, v)| v.len())
                .sum::<usize>()
                + self.seen.known.values().map(VecDeque::len).sum::<usize>(),
            present: self.resources.len(),
            resources: self.resources.values().map(BTreeMap::len).sum(),
            pending_iqs: self.iqs.len(),
            requests: self.requests.len(),
        }
    }

    /// The next stanza to send.
    pub fn poll_outbound(&mut self) -> Option<Outbound> {
        self.out.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<XmppEvent> {
        self.events.pop_front()
    }

    /// Pending incoming subscription requests (ignored ones stay here).
    pub fn requests(&self) -> impl Iterator<Item = &BareJid> {
        self.requests.iter()
    }

    /// Messages not yet acknowledged by the server.
    pub fn pending(&self) -> usize {
        self.unsent.len() + self.inflight.len()
    }

    /// The stream is up. After a reset (not a resumption) the server forgot us: fetch the
    /// roster, announce presence, rejoin rooms and resend what it never acknowledged.
    pub fn online(&mut self, resumed: bool) {
        self.online = true;
        self.events.push_back(XmppEvent::Online { resumed });
        if !resumed {
            self.iq(IqPurpose::RosterGet, |id| {
                Iq::from_get(
                    id,
                    Roster {
                        ver: None,
                        items: vec![],
                    },
                )
            });
            self.announce();
            let rooms: Vec<BareJid> = self.rooms.keys().cloned().collect();
            for room in rooms {
                if let Some(r) = self.rooms.get_mut(&room) {
                    r.joined = false;
                    r.occupants.clear();
                }
                self.join_presence(&room);
            }
            let resend: Vec<Outgoing> = std::mem::take(&mut self.inflight).into_values().collect();
            for m in resend.into_iter().rev() {
                self.unsent.push_front(m);
            }
        }
        self.flush_unsent();
    }

    /// The stream is down (the driver reconnects).
    pub fn offline(&mut self, reason: String, permanent: bool) {
        self.online = false;
        for (jid, _) in std::mem::take(&mut self.resources) {
            self.events.push_back(XmppEvent::Presence {
                jid,
                show: Show::Offline,
            });
        }
        self.events
            .push_back(XmppEvent::Offline { reason, permanent });
    }

    fn announce(&mut self) {
        let p = match self.show {
            Show::Offline => Presence::new(PresenceType::Unavailable),
            Show::Available => Presence::new(PresenceType::None),
            Show::Away => Presence::new(PresenceType::None).with_show(XmppShow::Away),
            Show::DoNotDisturb => Presence::new(PresenceType::None).with_show(XmppShow::Dnd),
        };
        self.send(p);
    }

    /// Sets our availability.
    pub fn set_show(&mut self, show: Show) {
        self.show = show;
        if self.online {
            self.announce();
        }
    }

    fn remember(&mut self, from: &BareJid, id: &str) -> bool {
        let known = self.known(from);
        self.seen.remember(from, id, known)
    }

    /// Handles a stanza from the server.
    pub fn handle(&mut self, stanza: Stanza) {
        match stanza {
            Stanza::Message(m) => self.message(m),
            Stanza::Presence(p) => self.presence(p),
            Stanza::Iq(iq) => self.iq_in(iq),
        }
    }

    fn message(&mut self, m: Message) {
        let Some(from) = m.from.clone() else { return };
        let body = match m.get_best_body_cloned(vec![]) {
            Some((_, b)) => b,
            None => return, // chat states, receipts...: nothing to show
        };
        if body.len() > MAX_BODY {
            tracing::info!(%from, len = body.len(), "dropping an oversized message");
            return;
        }
        let delayed = m
            .payloads
            .iter()
            .any(|p| Delay::try_from(p.clone()).is_ok());
        let bare = from.to_bare();
        match m.type_ {
            MessageType::Groupchat => {
                if !self.rooms.contains_key(&bare) {
                    return;
                }
                let nick = from
                    .resource()
                    .map(|r| r.as_str().to_owned())
                    .unwrap_or_default();
                let id =
                    m.id.map(|i| i.0)
                        .unwrap_or_else(|| format!("{nick}:{}", body.len()));
                if self.own_room_ids.iter().any(|o| *o == id) || !self.remember(&bare, &id) {
                    return;
                }
                self.events.push_back(XmppEvent::RoomMessage {
                    room: bare,
                    nick,
                    id,
                    body,
                    delayed,
                });
            }
            MessageType::Error => {
                self.events.push_back(XmppEvent::Error {
                    reason: format!("message to {bare} was refused"),
                });
            }
            _ => {
                let id = m.id.map(|i| i.0).unwrap_or_default();
                if !id.is_empty() && !self.remember(&bare, &id) {
                    return;
                }
                self.events.push_back(XmppEvent::Message {
                    from: bare,
                    id,
                    body,
                    delayed,
                });
            }
        }
    }

    fn iq_in(&mut self, iq: Iq) {
        match iq {
            Iq::Result { id, payload, .. } => match self.answered(&id) {
                Some(IqPurpose::RosterGet) => {
                    let roster = payload.and_then(|e| Roster::try_from(e).ok());
                    let items = roster.map(|r| r.items).unwrap_or_default();
                    self.roster.clear();
                    for item in items.iter().take(MAX_ROSTER) {
                        self.roster.insert(item.jid.clone(), contact_of(item));
                    }
                    let roster = &self.roster;
                    self.resources.retain(|jid, _| roster.contains_key(jid));
                    self.forget_unknown();
                    self.events
                        .push_back(XmppEvent::Roster(self.roster.values().cloned().collect()));
                }
                Some(IqPurpose::RoomConfig(room)) => {
                    self.events.push_back(XmppEvent::RoomProtected { room });
                }
                Some(IqPurpose::RosterSet(_)) | None => {}
            },
            Iq::Error { id, error, .. } => match self.answered(&id) {
                Some(IqPurpose::RosterSet(jid)) => {
                    self.events.push_back(XmppEvent::Error {
                        reason: format!(
                            "the server refused the change to {jid}: {:?}",
                            error.defined_condition
                        ),
                    });
                }
                Some(IqPurpose::RoomConfig(room)) => {
                    // The room exists without the password the user chose: say so
                    // rather than let them believe it is protected.
                    self.events.push_back(XmppEvent::Error {
                        reason: format!(
                            "{room} could not be protected with a password ({:?}); anyone may join it",
                            error.defined_condition
                        ),
                    });
                }
                _ => {}
            },
            Iq::Set {
                from, id, payload, ..
            } => {
                // Roster pushes come from our own account (or the server, with no from).
                let from_us = from.as_ref().is_none_or(|f| f.to_bare() == self.me);
                match Roster::try_from(payload.clone()) {
                    Ok(roster) if from_us => {
                        for item in roster.items {
                            if item.subscription == Subscription::Remove {
                                self.roster.remove(&item.jid);
                                self.resources.remove(&item.jid);
                                self.forget_unknown();
                                self.events.push_back(XmppEvent::ContactRemoved(item.jid));
                            } else if self.roster.len() < MAX_ROSTER
                                || self.roster.contains_key(&item.jid)
                            {
                                let c = contact_of(&item);
                                self.roster.insert(item.jid.clone(), c.clone());
                                self.events.push_back(XmppEvent::ContactUpdated(c));
                            }
                        }
                        self.send(Iq::empty_result(
                            from.unwrap_or_else(|| Jid::from(self.me.clone())),
                            id,
                        ));
                    }
                    _ => self.refuse(from, id, payload),
                }
            }
            Iq::Get {
                from, id, payload, ..
            } => self.refuse(from, id, payload),
        }
    }

    /// Answers IQs we do not implement, as RFC 6120 §8.2.3 requires.
    fn refuse(&mut self, from: Option<Jid>, id: String, payload: Element) {
        tracing::debug!(ns = payload.ns(), name = payload.name(), "unsupported IQ");
        let error = StanzaError::new(
            ErrorType::Cancel,
            DefinedCondition::ServiceUnavailable,
            "en",
            "not supported",
        );
        let mut reply = Iq::from_error(id, error);
        if let Some(f) = from {
            reply = reply.with_to(f);
        }
        self.send(reply);
    }
}
