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

fn show_of(p: &Presence) -> Show {
    match (p.type_.clone(), p.show.clone()) {
        (PresenceType::Unavailable, _) => Show::Offline,
        (_, Some(XmppShow::Away | XmppShow::Xa)) => Show::Away,
        (_, Some(XmppShow::Dnd)) => Show::DoNotDisturb,
        _ => Show::Available,
    }
}

fn best(shows: &BTreeMap<u64, Show>) -> Show {
    let rank = |s: &Show| match s {
        Show::Available => 3,
        Show::DoNotDisturb => 2,
        Show::Away => 1,
        Show::Offline => 0,
    };
    shows
        .values()
        .copied()
        .max_by_key(rank)
        .unwrap_or(Show::Offline)
}

fn contact_of(item: &Item) -> Contact {
    Contact {
        jid: item.jid.clone(),
        name: item.name.clone().filter(|n| !n.is_empty()),
        group: item.groups.first().map(|g| g.0.clone()),
        we_see_them: matches!(item.subscription, Subscription::To | Subscription::Both),
        they_see_us: matches!(item.subscription, Subscription::From | Subscription::Both),
        waiting: item.ask == Ask::Subscribe,
    }
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

    /// The server acknowledged (or at least took) message `id`.
    pub fn delivered(&mut self, id: &str) {
        if self.inflight.remove(id).is_some() {
            self.events
                .push_back(XmppEvent::Delivered { id: id.to_owned() });
        }
    }

    fn flush_unsent(&mut self) {
        if !self.online {
            return;
        }
        while let Some(m) = self.unsent.pop_front() {
            let body = m.body.clone();
            let mut msg = if m.room {
                Message::groupchat(Some(Jid::from(m.to.clone())))
            } else {
                Message::chat(Some(Jid::from(m.to.clone())))
            };
            msg.id = Some(tokio_xmpp::parsers::message::Id(m.id.clone()));
            msg.bodies.insert(Default::default(), body);
            let id = m.id.clone();
            self.inflight.insert(id.clone(), m);
            self.out.push_back(Outbound {
                stanza: msg.into(),
                track: Some(id),
            });
        }
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

    fn check_body(&mut self, body: &str) -> bool {
        if body.is_empty() || body.len() > MAX_BODY {
            self.events.push_back(XmppEvent::Error {
                reason: format!("a message must be 1 to {MAX_BODY} bytes"),
            });
            return false;
        }
        true
    }

    /// Queues a chat message; it is sent now if online, else on reconnect. Returns its id
    /// (`id` if given, else a fresh one).
    pub fn send_message(
        &mut self,
        to: BareJid,
        body: String,
        id: Option<String>,
    ) -> Option<String> {
        if !self.check_body(&body) {
            return None;
        }
        let id = match id {
            Some(id) if !id.is_empty() && id.len() <= 128 => id,
            _ => self.new_id(),
        };
        self.events.push_back(XmppEvent::Queued {
            to: to.clone(),
            id: id.clone(),
            body: body.clone(),
            room: false,
        });
        self.unsent.push_back(Outgoing {
            id: id.clone(),
            to,
            body,
            room: false,
        });
        self.flush_unsent();
        Some(id)
    }

    /// Sends a message to a joined room. Returns its id.
    pub fn send_room(&mut self, room: BareJid, body: String) -> Option<String> {
        if !self.rooms.contains_key(&room) {
            self.events.push_back(XmppEvent::Error {
                reason: format!("not in room {room}"),
            });
            return None;
        }
        if !self.check_body(&body) {
            return None;
        }
        let id = self.new_id();
        self.own_room_ids.push_back(id.clone());
        if self.own_room_ids.len() > SEEN_IDS {
            self.own_room_ids.pop_front();
        }
        self.events.push_back(XmppEvent::Queued {
            to: room.clone(),
            id: id.clone(),
            body: body.clone(),
            room: true,
        });
        self.unsent.push_back(Outgoing {
            id: id.clone(),
            to: room,
            body,
            room: true,
        });
        self.flush_unsent();
        Some(id)
    }

    /// Sets our availability.
    pub fn set_show(&mut self, show: Show) {
        self.show = show;
        if self.online {
            self.announce();
        }
    }

    /// Adds (or renames / moves) a contact and asks to see their presence.
    pub fn add_contact(&mut self, jid: BareJid, name: Option<String>, group: Option<String>) {
        self.set_contact(jid.clone(), name, group);
        self.send(Presence::new(PresenceType::Subscribe).with_to(Jid::from(jid)));
    }

    /// Renames a contact or moves it to another group.
    pub fn set_contact(&mut self, jid: BareJid, name: Option<String>, group: Option<String>) {
        let item = Item {
            jid: jid.clone(),
            name,
            subscription: Subscription::None,
            ask: Ask::None,
            groups: group.into_iter().map(Group).collect(),
            approved: None,
        };
        self.iq(IqPurpose::RosterSet(jid), |id| {
            Iq::from_set(
                id,
                Roster {
                    ver: None,
                    items: vec![item],
                },
            )
        });
    }

    /// Removes a contact (and both subscriptions).
    pub fn remove_contact(&mut self, jid: BareJid) {
        let item = Item {
            jid: jid.clone(),
            name: None,
            subscription: Subscription::Remove,
            ask: Ask::None,
            groups: vec![],
            approved: None,
        };
        self.iq(IqPurpose::RosterSet(jid), |id| {
            Iq::from_set(
                id,
                Roster {
                    ver: None,
                    items: vec![item],
                },
            )
        });
    }

    /// Lets `jid` see our presence, and asks to see theirs if we do not yet.
    pub fn authorize(&mut self, jid: BareJid) {
        self.requests.retain(|r| *r != jid);
        self.send(Presence::new(PresenceType::Subscribed).with_to(Jid::from(jid.clone())));
        let sees = self
            .roster
            .get(&jid)
            .is_some_and(|c| c.we_see_them || c.waiting);
        if !sees {
            self.send(Presence::new(PresenceType::Subscribe).with_to(Jid::from(jid)));
        }
    }

    /// Refuses `jid`'s request; they are told.
    pub fn deny(&mut self, jid: BareJid) {
        self.requests.retain(|r| *r != jid);
        self.send(Presence::new(PresenceType::Unsubscribed).with_to(Jid::from(jid)));
    }

    /// Joins (or creates) a room.
    pub fn join_room(&mut self, room: BareJid, nick: String, password: Option<String>) {
        self.rooms.insert(
            room.clone(),
            Room {
                nick,
                password,
                joined: false,
                occupants: BTreeSet::new(),
            },
        );
        self.join_presence(&room);
    }

    fn join_presence(&mut self, room: &BareJid) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        let Ok(resource) = ResourcePart::new(&r.nick) else {
            self.events.push_back(XmppEvent::Error {
                reason: format!("{:?} is not a valid nickname", r.nick),
            });
            return;
        };
        let to = FullJid::from_parts(room.node(), room.domain(), &resource);
        let muc = Muc {
            password: r.password.clone(),
            history: None,
        };
        let p = Presence::new(PresenceType::None)
            .with_to(Jid::from(to))
            .with_payload(muc);
        self.send(p);
    }

    /// Configures a room we own to require `password` (XEP-0045 §10.1.3).
    fn protect_room(&mut self, room: BareJid, password: &str) {
        use tokio_xmpp::parsers::data_forms::{DataForm, DataFormType, Field, FieldType};
        let form = DataForm::new(
            DataFormType::Submit,
            "http://jabber.org/protocol/muc#roomconfig",
            vec![
                Field::new("muc#roomconfig_passwordprotectedroom", FieldType::Boolean)
                    .with_value("1"),
                Field::new("muc#roomconfig_roomsecret", FieldType::TextPrivate)
                    .with_value(password),
            ],
        );
        let query = Element::builder("query", "http://jabber.org/protocol/muc#owner")
            .append(Element::from(form))
            .build();
        self.iq(IqPurpose::RoomConfig(room.clone()), |id| Iq::Set {
            from: None,
            to: Some(Jid::from(room)),
            id,
            payload: query,
        });
    }

    /// Leaves a room.
    pub fn leave_room(&mut self, room: BareJid) {
        if let Some(r) = self.rooms.remove(&room)
            && let Ok(resource) = ResourcePart::new(&r.nick)
        {
            let to = FullJid::from_parts(room.node(), room.domain(), &resource);
            self.send(Presence::new(PresenceType::Unavailable).with_to(Jid::from(to)));
        }
        self.forget_unknown();
        self.events.push_back(XmppEvent::RoomLeft { room });
    }

    /// The user took part in a conversation with `jid`: from now on its message ids
    /// and subscription request are kept like a contact's, whatever strangers send.
    pub fn engage(&mut self, jid: BareJid) {
        if !self.engaged.insert(jid.clone()) {
            return;
        }
        self.engaged_order.push_back(jid);
        if self.engaged_order.len() > MAX_ENGAGED
            && let Some(oldest) = self.engaged_order.pop_front()
        {
            self.engaged.remove(&oldest);
            self.forget_unknown();
        }
    }

    /// A sender the user knows: a roster contact, someone the user wrote to, a room the
    /// user is in.
    fn known(&self, jid: &BareJid) -> bool {
        self.roster.contains_key(jid) || self.rooms.contains_key(jid) || self.engaged.contains(jid)
    }

    /// Drops what is kept for senders the user no longer knows.
    fn forget_unknown(&mut self) {
        let (roster, rooms, engaged) = (&self.roster, &self.rooms, &self.engaged);
        self.seen.retain_known(|j| {
            roster.contains_key(j) || rooms.contains_key(j) || engaged.contains(j)
        });
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

    fn presence(&mut self, p: Presence) {
        let Some(from) = p.from.clone() else { return };
        let bare = from.to_bare();
        if self.rooms.contains_key(&bare) {
            return self.room_presence(bare, from, p);
        }
        match p.type_ {
            // A repeated request is listed once; the user decides once.
            PresenceType::Subscribe if !self.requests.contains(&bare) => {
                let strangers = self.requests.iter().filter(|r| !self.known(r)).count();
                if !self.known(&bare) && strangers >= MAX_REQUESTS {
                    // The oldest stranger's request goes, and the user is told.
                    if let Some(pos) = self.requests.iter().position(|r| !self.known(r))
                        && let Some(dropped) = self.requests.remove(pos)
                    {
                        self.events
                            .push_back(XmppEvent::RequestDropped { from: dropped });
                    }
                }
                self.requests.push_back(bare.clone());
                self.events
                    .push_back(XmppEvent::SubscriptionRequest { from: bare });
            }
            // Only contacts' presence is shown: anyone else's is not kept.
            PresenceType::None | PresenceType::Unavailable if self.roster.contains_key(&bare) => {
                let resource = self
                    .resource_hasher
                    .hash_one(from.resource().map(|r| r.as_str()).unwrap_or_default());
                let shows = self.resources.entry(bare.clone()).or_default();
                let before = best(shows);
                match show_of(&p) {
                    Show::Offline => {
                        shows.remove(&resource);
                    }
                    s => {
                        if shows.len() < MAX_RESOURCES || shows.contains_key(&resource) {
                            shows.insert(resource, s);
                        }
                    }
                }
                let after = best(shows);
                if shows.is_empty() {
                    self.resources.remove(&bare);
                }
                if after != before {
                    self.events.push_back(XmppEvent::Presence {
                        jid: bare,
                        show: after,
                    });
                }
            }
            _ => {} // subscribed/unsubscribed: the roster push tells the state
        }
    }

    fn room_presence(&mut self, room: BareJid, from: Jid, p: Presence) {
        let Some(nick) = from.resource().map(|r| r.as_str().to_owned()) else {
            return;
        };
        let Some(r) = self.rooms.get_mut(&room) else {
            return;
        };
        if p.type_ == PresenceType::Error {
            let reason = p
                .payloads
                .iter()
                .find_map(|e| StanzaError::try_from(e.clone()).ok())
                .map(|e| match e.defined_condition {
                    DefinedCondition::NotAuthorized => "wrong room password".to_owned(),
                    DefinedCondition::Conflict => "that nickname is taken".to_owned(),
                    DefinedCondition::RegistrationRequired => "members only".to_owned(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_else(|| "refused".to_owned());
            self.rooms.remove(&room);
            self.events.push_back(XmppEvent::Error {
                reason: format!("cannot join {room}: {reason}"),
            });
            return;
        }
        let is_self = p
            .payloads
            .iter()
            .filter_map(|e| MucUser::try_from(e.clone()).ok())
            .any(|u| {
                u.status
                    .iter()
                    .any(|s| matches!(s, tokio_xmpp::parsers::muc::user::Status::SelfPresence))
            })
            || nick == r.nick;
        if p.type_ == PresenceType::Unavailable {
            r.occupants.remove(&nick);
        } else if r.occupants.len() < 10_000 || r.occupants.contains(&nick) {
            r.occupants.insert(nick.clone());
        }
        if is_self && !r.joined && p.type_ != PresenceType::Unavailable {
            r.joined = true;
            let nick = r.nick.clone();
            let created = p
                .payloads
                .iter()
                .filter_map(|e| MucUser::try_from(e.clone()).ok())
                .any(|u| {
                    u.status.iter().any(|s| {
                        matches!(
                            s,
                            tokio_xmpp::parsers::muc::user::Status::RoomHasBeenCreated
                        )
                    })
                });
            if created && let Some(password) = r.password.clone() {
                // We made the room: protect it with the password we were given, as the
                // user asked, before anyone else can walk in.
                self.protect_room(room.clone(), &password);
            }
            self.events.push_back(XmppEvent::RoomJoined {
                room: room.clone(),
                nick,
            });
        }
        let occupants: Vec<String> = self
            .rooms
            .get(&room)
            .map(|r| r.occupants.iter().cloned().collect())
            .unwrap_or_default();
        self.events
            .push_back(XmppEvent::RoomOccupants { room, occupants });
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

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(s: &str) -> BareJid {
        s.parse().expect("jid")
    }

    fn drain(c: &mut ChatCore) -> Vec<Outbound> {
        std::iter::from_fn(|| c.poll_outbound()).collect()
    }

    fn events(c: &mut ChatCore) -> Vec<XmppEvent> {
        std::iter::from_fn(|| c.poll_event()).collect()
    }

    #[test]
    fn messages_typed_offline_go_out_once_after_reconnect() {
        let mut c = ChatCore::new(jid("alice@localhost"), "s1".into());
        let id = c
            .send_message(jid("bob@localhost"), "hello".into(), None)
            .expect("queued");
        assert!(drain(&mut c).is_empty(), "nothing goes out while offline");
        c.online(false);
        let out = drain(&mut c);
        let msgs: Vec<&Outbound> = out.iter().filter(|o| o.track.is_some()).collect();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].track.as_deref(), Some(id.as_str()));
        // Connection lost before the server acknowledged: resent with the same id.
        c.offline("gone".into(), false);
        c.online(false);
        let again: Vec<Outbound> = drain(&mut c)
            .into_iter()
            .filter(|o| o.track.is_some())
            .collect();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].track.as_deref(), Some(id.as_str()));
        c.delivered(&id);
        assert_eq!(c.pending(), 0);
        // A resumed session does not resend.
        c.offline("blip".into(), false);
        c.online(true);
        assert!(drain(&mut c).iter().all(|o| o.track.is_none()));
    }

    #[test]
    fn duplicate_ids_are_shown_once() {
        let mut c = ChatCore::new(jid("bob@localhost"), "s2".into());
        let mut m = Message::chat(Some(Jid::from(jid("bob@localhost"))));
        m.from = Some("alice@localhost/phone".parse().expect("jid"));
        m.id = Some(tokio_xmpp::parsers::message::Id("x-1".into()));
        m.bodies.insert(Default::default(), "hi".into());
        c.handle(m.clone().into());
        c.handle(m.into());
        let got: Vec<XmppEvent> = events(&mut c)
            .into_iter()
            .filter(|e| matches!(e, XmppEvent::Message { .. }))
            .collect();
        assert_eq!(got.len(), 1);
    }

    #[test]
    fn subscription_requests_wait_for_a_decision() {
        let mut c = ChatCore::new(jid("bob@localhost"), "s3".into());
        let mut p = Presence::new(PresenceType::Subscribe);
        p.from = Some(Jid::from(jid("carol@localhost")));
        c.handle(p.clone().into());
        c.handle(p.into());
        assert_eq!(
            events(&mut c),
            vec![XmppEvent::SubscriptionRequest {
                from: jid("carol@localhost")
            }]
        );
        assert_eq!(c.requests().count(), 1, "ignored requests stay listed");
        c.deny(jid("carol@localhost"));
        assert_eq!(c.requests().count(), 0);
        let out = drain(&mut c);
        assert!(
            matches!(&out[0].stanza, Stanza::Presence(p) if p.type_ == PresenceType::Unsubscribed)
        );
    }

    #[test]
    fn unknown_iqs_get_an_error_and_foreign_roster_pushes_are_refused() {
        let mut c = ChatCore::new(jid("bob@localhost"), "s4".into());
        let payload: Element = "<query xmlns='jabber:iq:version'/>".parse().expect("xml");
        c.handle(
            Iq::Get {
                from: Some(Jid::from(jid("eve@localhost"))),
                to: None,
                id: "v1".into(),
                payload,
            }
            .into(),
        );
        let push: Element = "<query xmlns='jabber:iq:roster'><item jid='mallory@evil'/></query>"
            .parse()
            .expect("xml");
        c.handle(
            Iq::Set {
                from: Some(Jid::from(jid("eve@localhost"))),
                to: None,
                id: "p1".into(),
                payload: push,
            }
            .into(),
        );
        let out = drain(&mut c);
        assert_eq!(out.len(), 2);
        assert!(
            out.iter()
                .all(|o| matches!(&o.stanza, Stanza::Iq(Iq::Error { .. })))
        );
        assert!(
            events(&mut c).is_empty(),
            "no roster change from a stranger"
        );
    }

    fn chat_from(from: &str, id: &str, body: &str) -> Stanza {
        let mut m = Message::chat(Some(Jid::from(jid("bob@localhost"))));
        m.from = Some(from.parse().expect("jid"));
        m.id = Some(tokio_xmpp::parsers::message::Id(id.into()));
        m.bodies.insert(Default::default(), body.into());
        m.into()
    }

    #[test]
    fn a_flood_of_senders_keeps_per_sender_state_bounded() {
        let mut c = ChatCore::new(jid("bob@localhost"), "s6".into());
        c.online(false);
        drain(&mut c);
        // The roster (our first IQ) holds one friend.
        let roster: Element = "<query xmlns='jabber:iq:roster'>\
             <item jid='friend@localhost' subscription='both'/></query>"
            .parse()
            .expect("xml");
        c.handle(
            Iq::Result {
                from: None,
                to: None,
                id: "s6-1".into(),
                payload: Some(roster),
            }
            .into(),
        );
        events(&mut c);
        let long_id = "i".repeat(1_000);
        for i in 0..5_000 {
            let sender = format!("s{i}@evil.example");
            c.handle(chat_from(
                &format!("{sender}/r{i}"),
                &format!("{long_id}{i}"),
                "hi",
            ));
            let mut p = Presence::new(PresenceType::None);
            p.from = Some(format!("{sender}/r{i}").parse().expect("jid"));
            c.handle(p.into());
            let mut p = Presence::new(PresenceType::Subscribe);
            p.from = Some(sender.parse().expect("jid"));
            c.handle(p.into());
            let mut p = Presence::new(PresenceType::None);
            p.from = Some(format!("friend@localhost/device{i}").parse().expect("jid"));
            c.handle(p.into());
            // The server never answers our IQs (and keeps resetting the stream).
            c.set_contact(jid("friend@localhost"), Some(format!("F{i}")), None);
            if i % 10 == 0 {
                c.offline("gone".into(), false);
                c.online(false);
            }
            drain(&mut c);
            events(&mut c);
        }
        let t = c.tracked();
        assert!(t.senders <= MAX_SENDERS, "{t:?}");
        assert!(t.message_ids <= MAX_SENDERS * SEEN_IDS, "{t:?}");
        assert_eq!(t.present, 1, "only the friend's presence is kept: {t:?}");
        assert!(t.resources <= MAX_RESOURCES, "{t:?}");
        assert!(t.pending_iqs <= MAX_PENDING_IQS, "{t:?}");
        assert!(t.requests <= MAX_REQUESTS, "{t:?}");
        // The friend still gets through, once.
        c.handle(chat_from("friend@localhost/phone", "f-1", "still here"));
        c.handle(chat_from("friend@localhost/phone", "f-1", "still here"));
        let got: Vec<XmppEvent> = events(&mut c)
            .into_iter()
            .filter(|e| matches!(e, XmppEvent::Message { from, .. } if *from == jid("friend@localhost")))
            .collect();
        assert_eq!(got.len(), 1, "{got:?}");
        // The newest requests are the ones kept.
        assert!(c.requests().any(|r| *r == jid("s4999@evil.example")));
    }

    #[test]
    fn oversized_and_empty_bodies() {
        let mut c = ChatCore::new(jid("bob@localhost"), "s5".into());
        assert!(c.send_message(jid("a@b"), String::new(), None).is_none());
        assert!(
            c.send_message(jid("a@b"), "x".repeat(MAX_BODY + 1), None)
                .is_none()
        );
        let mut m = Message::chat(None);
        m.from = Some(Jid::from(jid("a@b")));
        m.bodies
            .insert(Default::default(), "y".repeat(MAX_BODY + 1));
        c.handle(m.into());
        assert!(
            !events(&mut c)
                .iter()
                .any(|e| matches!(e, XmppEvent::Message { .. }))
        );
    }

    /// An online core whose roster (its first IQ, `{prefix}-1`) holds `friend`.
    fn with_friend(prefix: &str, friend: &str) -> ChatCore {
        let mut c = ChatCore::new(jid("bob@localhost"), prefix.into());
        c.online(false);
        drain(&mut c);
        let roster: Element = format!(
            "<query xmlns='jabber:iq:roster'><item jid='{friend}' subscription='both'/></query>"
        )
        .parse()
        .expect("xml");
        c.handle(
            Iq::Result {
                from: None,
                to: None,
                id: format!("{prefix}-1"),
                payload: Some(roster),
            }
            .into(),
        );
        events(&mut c);
        c
    }

    fn subscribe(c: &mut ChatCore, from: &str) {
        let mut p = Presence::new(PresenceType::Subscribe);
        p.from = Some(from.parse().expect("jid"));
        c.handle(p.into());
    }

    #[test]
    fn strangers_never_push_out_the_message_ids_of_senders_the_user_knows() {
        let mut c = with_friend("s7", "friend@localhost");
        // Someone outside the roster the user wrote to.
        c.engage(jid("pen-pal@elsewhere.example"));
        let known = ["friend@localhost/phone", "pen-pal@elsewhere.example/laptop"];
        for from in known {
            c.handle(chat_from(from, "m-1", "once"));
        }
        assert_eq!(events(&mut c).len(), 2);
        // More strangers than the cap write, each once.
        for i in 0..(MAX_SENDERS * 2) {
            c.handle(chat_from(&format!("s{i}@evil.example/r"), "x", "hi"));
        }
        events(&mut c);
        let t = c.tracked();
        assert!(t.senders <= MAX_SENDERS, "{t:?}");
        assert_eq!(t.known_senders, 2, "{t:?}");
        // Both resend the same message (their server lost our acknowledgement): it is
        // shown once.
        for from in known {
            c.handle(chat_from(from, "m-1", "once"));
        }
        assert!(events(&mut c).is_empty(), "shown twice");
        // Removed from the roster, the friend is a stranger again: bounded like one.
        c.handle(
            Iq::Set {
                from: None,
                to: None,
                id: "push-1".into(),
                payload: "<query xmlns='jabber:iq:roster'>\
                          <item jid='friend@localhost' subscription='remove'/></query>"
                    .parse()
                    .expect("xml"),
            }
            .into(),
        );
        assert_eq!(c.tracked().known_senders, 1);
    }

    #[test]
    fn a_flood_of_requests_never_drops_a_known_senders_and_says_what_it_drops() {
        let mut c = with_friend("s8", "friend@localhost");
        c.engage(jid("pen-pal@elsewhere.example"));
        subscribe(&mut c, "friend@localhost");
        subscribe(&mut c, "pen-pal@elsewhere.example");
        let flood = MAX_REQUESTS + 44;
        for i in 0..flood {
            subscribe(&mut c, &format!("s{i}@evil.example"));
        }
        let dropped: Vec<BareJid> = events(&mut c)
            .into_iter()
            .filter_map(|e| match e {
                XmppEvent::RequestDropped { from } => Some(from),
                _ => None,
            })
            .collect();
        assert_eq!(dropped.len(), 44, "each drop is reported");
        assert_eq!(dropped[0], jid("s0@evil.example"), "the oldest first");
        assert!(c.requests().any(|r| *r == jid("friend@localhost")));
        assert!(c.requests().any(|r| *r == jid("pen-pal@elsewhere.example")));
        assert_eq!(c.tracked().requests, MAX_REQUESTS + 2);
    }
}
