//! How much chat the core keeps in memory, whatever senders do. A message from a new
//! address makes a conversation: at most [`MAX_CONVERSATIONS`] exist, and to make room
//! the idle ones nobody needs go first (strangers before contacts, least recently
//! active first). Never dropped: a conversation the user wrote in or acted on, one
//! holding messages, one with a buddy OTR knows (verified, or in the fingerprints
//! file), a private one, and a contact's that is finished or warns about a changed
//! key. Strangers — neither contacts nor known — may hold at most
//! [`MAX_PRIVATE_STRANGERS`] private conversations: beyond that the least recently
//! active is ended through OTR, with a notice, and can then go like any idle one. So
//! senders cannot fill the room the user's own conversations need.
//!
//! When nothing can be dropped, a stranger's plaintext message is not shown (the user
//! is told once); a contact's always is, and so is anything OTR has decrypted: a line
//! libotr decrypted cannot be decrypted again. Lines are bounded per conversation in
//! count and bytes; older ones live in the history, if the user keeps it.

use super::{ChatLayer, Conversation};
use crate::event::Event;
use crate::model::AccountId;
use crate::security::ChatSecurity;
use crate::snapshot::ChatLine;
use hush_signaling::xmpp::BareJid;
use hush_signaling::xmpp::account::XmppCommand;
use std::sync::Arc;

/// Conversations kept in memory (more only for contacts and decrypted messages when
/// nothing can be dropped, see the module comment).
pub(crate) const MAX_CONVERSATIONS: usize = 256;
/// Private conversations kept with strangers; beyond this the least recently active
/// is ended through OTR.
pub(crate) const MAX_PRIVATE_STRANGERS: usize = 64;
/// Lines kept per conversation or room.
pub(crate) const MAX_LINES: usize = 10_000;
/// Bytes of text kept per conversation or room.
pub(crate) const MAX_BYTES: usize = 1024 * 1024;
/// Bytes of text kept from a stranger: someone not in the roster the user never wrote to.
pub(crate) const STRANGER_BYTES: usize = 64 * 1024;
/// Subscription requests listed per account (the oldest go first).
pub(crate) const MAX_REQUESTS: usize = hush_signaling::xmpp::chat::MAX_REQUESTS;

/// Appends a line, dropping the oldest ones beyond [`MAX_LINES`] or `budget` bytes (the
/// newest line always stays).
pub(crate) fn push_line(lines: &mut Arc<Vec<ChatLine>>, line: ChatLine, budget: usize) {
    let v = Arc::make_mut(lines);
    v.push(line);
    let mut total: usize = v.iter().map(|l| l.body.len()).sum();
    let mut cut = v.len().saturating_sub(MAX_LINES);
    total -= v[..cut].iter().map(|l| l.body.len()).sum::<usize>();
    while total > budget && cut + 1 < v.len() {
        total -= v[cut].body.len();
        cut += 1;
    }
    v.drain(..cut);
}

impl Conversation {
    pub(super) fn private(&self) -> bool {
        matches!(
            self.security,
            ChatSecurity::PrivateUnverified | ChatSecurity::PrivateVerified
        )
    }

    /// The user needs it, whoever the peer is.
    fn needed(&self) -> bool {
        self.engaged || self.held > 0 || self.known
    }

    /// Dropping it would lose something the user needs. A stranger's private
    /// conversation stays until OTR has ended it (see [`MAX_PRIVATE_STRANGERS`]).
    fn kept(&self, contact: bool) -> bool {
        self.needed()
            || self.private()
            || (contact && (self.fingerprint_changed || self.security == ChatSecurity::Finished))
    }
}

impl ChatLayer {
    fn is_contact(&self, account: AccountId, peer: &str) -> bool {
        self.accounts
            .get(&account)
            .is_some_and(|a| a.contacts.contains_key(peer))
    }

    /// How many bytes of lines a conversation keeps.
    pub(crate) fn line_budget(&self, account: AccountId, peer: &str) -> usize {
        let needed = self
            .chats
            .get(&(account, peer.to_owned()))
            .is_some_and(|c| c.needed());
        if needed || self.is_contact(account, peer) {
            MAX_BYTES
        } else {
            STRANGER_BYTES
        }
    }

    /// The conversation with `peer`, made if needed, even if nothing can be dropped to
    /// make room: for something the user did, a buddy OTR knows, a private conversation
    /// (strangers' are bounded apart) or a line OTR decrypted.
    pub(crate) fn conversation(&mut self, account: AccountId, peer: &str) -> &mut Conversation {
        let key = (account, peer.to_owned());
        if !self.chats.contains_key(&key) && self.chats.len() >= MAX_CONVERSATIONS {
            self.make_room();
        }
        self.tick += 1;
        let tick = self.tick;
        let c = self.chats.entry(key).or_insert_with(Conversation::new);
        c.last_active = tick;
        c
    }

    /// The conversation with `peer`, made if needed, for something `peer` (or the
    /// network) did: `None` for a stranger when there is no room, and the user is told
    /// once. A contact's is always made.
    pub(crate) fn conversation_from(
        &mut self,
        account: AccountId,
        peer: &str,
        events: &mut Vec<Event>,
    ) -> Option<&mut Conversation> {
        let key = (account, peer.to_owned());
        if !self.chats.contains_key(&key)
            && self.chats.len() >= MAX_CONVERSATIONS
            && !self.make_room()
            && !self.is_contact(account, peer)
        {
            if !self.conversations_full {
                self.conversations_full = true;
                tracing::warn!("too many conversations: messages from new senders are dropped");
                events.push(Event::ChatError {
                    account,
                    reason: format!(
                        "{MAX_CONVERSATIONS} conversations are open and none can be closed, \
                         so messages from new senders (such as {peer}) are not shown. End \
                         private conversations you no longer need."
                    ),
                });
            }
            return None;
        }
        self.conversations_full = false;
        Some(self.conversation(account, peer))
    }

    /// Drops the least needed idle conversation; false if none may go.
    fn make_room(&mut self) -> bool {
        let victim = self
            .chats
            .iter()
            .map(|((account, peer), c)| ((account, peer), c, self.is_contact(*account, peer)))
            .filter(|(_, c, contact)| !c.kept(*contact))
            .min_by_key(|(_, c, contact)| (*contact, c.last_active))
            .map(|((account, peer), _, _)| (*account, peer.clone()));
        match victim {
            Some(k) => {
                self.chats.remove(&k);
                true
            }
            None => false,
        }
    }

    /// The strangers' private conversations beyond [`MAX_PRIVATE_STRANGERS`], least
    /// recently active first: to be ended through OTR.
    pub(crate) fn excess_private_strangers(&self) -> Vec<(AccountId, String)> {
        let mut strangers: Vec<(u64, (AccountId, String))> = self
            .chats
            .iter()
            .filter(|((account, peer), c)| {
                c.private() && !c.needed() && !self.is_contact(*account, peer)
            })
            .map(|(k, c)| (c.last_active, k.clone()))
            .collect();
        let excess = strangers.len().saturating_sub(MAX_PRIVATE_STRANGERS);
        strangers.sort();
        strangers.into_iter().take(excess).map(|(_, k)| k).collect()
    }

    /// The user took part in the conversation with `peer`: the account keeps what
    /// `peer` sends like a contact's (message ids, a subscription request).
    pub(crate) fn engage_account(&self, account: AccountId, peer: &str) {
        if let (Ok(jid), Some(a)) = (peer.parse::<BareJid>(), self.accounts.get(&account)) {
            a.handle.command(XmppCommand::Engage(jid));
        }
    }

    /// Someone the user knows: a contact, or a conversation the user took part in.
    fn known_sender(&self, account: AccountId, peer: &str) -> bool {
        self.is_contact(account, peer)
            || self
                .chats
                .get(&(account, peer.to_owned()))
                .is_some_and(|c| c.needed())
    }

    /// Lists a subscription request; false if it was listed already. Beyond
    /// [`MAX_REQUESTS`] from strangers, the oldest stranger's goes, and the user is
    /// told; a known sender's request is never dropped.
    pub(crate) fn add_request(
        &mut self,
        account: AccountId,
        from: String,
        events: &mut Vec<Event>,
    ) -> bool {
        let key = (account, from);
        if self.requests.contains_key(&key) {
            return false;
        }
        if !self.known_sender(account, &key.1) {
            let strangers = self
                .request_order
                .iter()
                .filter(|(a, p)| *a == account && !self.known_sender(*a, p))
                .count();
            if strangers >= MAX_REQUESTS
                && let Some(pos) = self
                    .request_order
                    .iter()
                    .position(|(a, p)| *a == account && !self.known_sender(*a, p))
                && let Some(oldest) = self.request_order.remove(pos)
            {
                self.requests.remove(&oldest);
                events.push(Event::ChatError {
                    account,
                    reason: dropped_request(&oldest.1),
                });
            }
        }
        self.request_order.push_back(key.clone());
        self.requests.insert(key, false);
        true
    }

    /// The account dropped a stranger's request to make room: it goes from the list
    /// too, and the user is told.
    pub(crate) fn request_dropped(
        &mut self,
        account: AccountId,
        from: String,
        events: &mut Vec<Event>,
    ) {
        let key = (account, from);
        if self.requests.contains_key(&key) {
            self.remove_request(&key);
            events.push(Event::ChatError {
                account,
                reason: dropped_request(&key.1),
            });
        }
    }

    /// Removes a request from the list.
    pub(crate) fn remove_request(&mut self, key: &(AccountId, String)) {
        self.requests.remove(key);
        self.request_order.retain(|k| k != key);
    }
}

fn dropped_request(from: &str) -> String {
    format!(
        "Too many people you do not know asked to see your presence at once: the \
         request from {from} was dropped unanswered. If you know them, ask them to ask again."
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AccountId;

    fn line(body: &str) -> ChatLine {
        super::super::otr::notice(body.into())
    }

    #[test]
    fn lines_are_bounded_in_count_and_bytes_and_the_newest_stays() {
        let mut lines = Arc::default();
        for i in 0..(MAX_LINES + 10) {
            push_line(&mut lines, line(&format!("{i}")), MAX_BYTES);
        }
        assert_eq!(lines.len(), MAX_LINES);
        assert_eq!(lines.last().map(|l| l.body.as_str()), Some("10009"));
        let big = "x".repeat(10_000);
        for _ in 0..100 {
            push_line(&mut lines, line(&big), STRANGER_BYTES);
        }
        let bytes: usize = lines.iter().map(|l| l.body.len()).sum();
        assert!(bytes <= STRANGER_BYTES, "{bytes}");
        let huge = "y".repeat(STRANGER_BYTES * 2);
        push_line(&mut lines, line(&huge), STRANGER_BYTES);
        assert_eq!(lines.len(), 1, "only the newest, however long");
    }

    #[test]
    fn new_senders_push_out_idle_strangers_never_kept_conversations() {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let mut layer = ChatLayer::new(tx);
        let mut events = Vec::new();
        let a = AccountId(1);
        // One the user wrote in, one private; then strangers up to the cap.
        layer.conversation(a, "friend@localhost").engaged = true;
        layer.conversation(a, "private@localhost").security = ChatSecurity::PrivateUnverified;
        for i in 0..(MAX_CONVERSATIONS * 4) {
            let who = format!("s{i}@evil.example");
            assert!(layer.conversation_from(a, &who, &mut events).is_some());
            assert!(layer.chats.len() <= MAX_CONVERSATIONS);
        }
        assert!(events.is_empty(), "room was always made: {events:?}");
        assert!(layer.chats.contains_key(&(a, "friend@localhost".into())));
        assert!(layer.chats.contains_key(&(a, "private@localhost".into())));
        assert!(
            layer
                .chats
                .contains_key(&(a, format!("s{}@evil.example", MAX_CONVERSATIONS * 4 - 1)))
        );
        // When every conversation must stay, a new sender is refused, and the user told once.
        for c in layer.chats.values_mut() {
            c.engaged = true;
        }
        assert!(
            layer
                .conversation_from(a, "late@evil.example", &mut events)
                .is_none()
        );
        assert!(
            layer
                .conversation_from(a, "later@evil.example", &mut events)
                .is_none()
        );
        assert_eq!(events.len(), 1, "{events:?}");
        assert!(
            matches!(&events[0], Event::ChatError { reason, .. } if reason.contains("not shown"))
        );
        assert_eq!(layer.chats.len(), MAX_CONVERSATIONS);
    }

    #[test]
    fn a_flood_of_requests_never_drops_a_known_senders_and_tells_of_each_drop() {
        use crate::model::OtrPolicySetting;
        use crate::snapshot::{ContactView, Presence, Subscription};
        use hush_signaling::xmpp::account::XmppHandle;
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let mut layer = ChatLayer::new(tx);
        let a = AccountId(1);
        let (handle, _commands) = XmppHandle::detached();
        let friend = ContactView {
            account: a,
            address: "friend@localhost".into(),
            alias: None,
            group: None,
            presence: Presence::Offline,
            subscription: Subscription::None,
        };
        layer.accounts.insert(
            a,
            super::super::Account {
                handle,
                jid: "alice@localhost".parse().expect("jid"),
                contacts: [("friend@localhost".to_owned(), friend)].into(),
                otr_policy: OtrPolicySetting::Opportunistic,
            },
        );
        // Someone outside the roster the user wrote to.
        layer.conversation(a, "pen-pal@elsewhere.example").engaged = true;
        let mut events = Vec::new();
        for known in ["friend@localhost", "pen-pal@elsewhere.example"] {
            assert!(layer.add_request(a, known.into(), &mut events));
        }
        for i in 0..(MAX_REQUESTS + 10) {
            assert!(layer.add_request(a, format!("s{i}@evil.example"), &mut events));
        }
        assert_eq!(events.len(), 10, "one word per dropped request");
        assert!(
            matches!(&events[0], Event::ChatError { reason, .. } if reason.contains("s0@evil.example"))
        );
        for known in ["friend@localhost", "pen-pal@elsewhere.example"] {
            assert!(
                layer.requests.contains_key(&(a, known.to_owned())),
                "{known}"
            );
        }
        assert_eq!(layer.requests.len(), MAX_REQUESTS + 2);
        // The account drops one of its own (it keeps the same bound): gone here too.
        events.clear();
        layer.request_dropped(a, "s10@evil.example".into(), &mut events);
        assert!(
            !layer
                .requests
                .contains_key(&(a, "s10@evil.example".to_owned()))
        );
        assert_eq!(events.len(), 1);
        layer.request_dropped(a, "never-asked@evil.example".into(), &mut events);
        assert_eq!(
            events.len(),
            1,
            "nothing to say about a request never listed"
        );
    }
}
