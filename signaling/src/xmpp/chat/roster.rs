//! The roster side of a [`ChatCore`]: contacts, their presence and subscriptions, and
//! which senders the user knows.

use super::*;

pub(super) fn show_of(p: &Presence) -> Show {
    match (p.type_.clone(), p.show.clone()) {
        (PresenceType::Unavailable, _) => Show::Offline,
        (_, Some(XmppShow::Away | XmppShow::Xa)) => Show::Away,
        (_, Some(XmppShow::Dnd)) => Show::DoNotDisturb,
        _ => Show::Available,
    }
}

pub(super) fn best(shows: &BTreeMap<u64, Show>) -> Show {
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

pub(super) fn contact_of(item: &Item) -> Contact {
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

    pub(super) fn presence(&mut self, p: Presence) {
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
    pub(super) fn known(&self, jid: &BareJid) -> bool {
        self.roster.contains_key(jid) || self.rooms.contains_key(jid) || self.engaged.contains(jid)
    }

    /// Drops what is kept for senders the user no longer knows.
    pub(super) fn forget_unknown(&mut self) {
        let (roster, rooms, engaged) = (&self.roster, &self.rooms, &self.engaged);
        self.seen.retain_known(|j| {
            roster.contains_key(j) || rooms.contains_key(j) || engaged.contains(j)
        });
    }
}
