//! Multi-user chat rooms (XEP-0045) of a [`ChatCore`]: joining (with a password, or
//! making a new room protected by one), occupants, and room messages.

use super::*;

impl ChatCore {
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

    pub(super) fn join_presence(&mut self, room: &BareJid) {
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
    pub(super) fn protect_room(&mut self, room: BareJid, password: &str) {
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

    pub(super) fn room_presence(&mut self, room: BareJid, from: Jid, p: Presence) {
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
}
