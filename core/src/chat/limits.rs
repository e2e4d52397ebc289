//! How much chat the core keeps in memory, whatever senders do. A message from a new
//! address makes a conversation: at most [`MAX_CONVERSATIONS`] exist, and to make room
//! the idle ones nobody needs go first (strangers before contacts, least recently
//! active first). A conversation the user wrote in, one that is private, finished,
//! holding messages or warning about a changed key is never dropped; when only such
//! ones are left, a new sender's message is not shown, and the user is told once.
//! Lines are bounded per conversation in count and bytes; older ones live in the
//! history, if the user keeps it.

use super::{ChatLayer, Conversation};
use crate::event::Event;
use crate::model::AccountId;
use crate::security::ChatSecurity;
use crate::snapshot::ChatLine;
use std::sync::Arc;

/// Conversations kept in memory.
pub(crate) const MAX_CONVERSATIONS: usize = 256;
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
    /// Dropping it would lose something the user needs.
    fn kept(&self) -> bool {
        self.engaged
            || self.held > 0
            || self.fingerprint_changed
            || self.security != ChatSecurity::NotPrivate
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
        let engaged = self
            .chats
            .get(&(account, peer.to_owned()))
            .is_some_and(|c| c.engaged);
        if engaged || self.is_contact(account, peer) {
            MAX_BYTES
        } else {
            STRANGER_BYTES
        }
    }

    /// The conversation with `peer`, made if needed, for something the user did: made
    /// even if nothing can be dropped to make room.
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
    /// network) did: `None` if there is no room, and the user is told once.
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
            .filter(|(_, c)| !c.kept())
            .min_by_key(|((account, peer), c)| (self.is_contact(*account, peer), c.last_active))
            .map(|(k, _)| k.clone());
        match victim {
            Some(k) => {
                self.chats.remove(&k);
                true
            }
            None => false,
        }
    }

    /// Lists a subscription request; false if it was listed already.
    pub(crate) fn add_request(&mut self, account: AccountId, from: String) -> bool {
        let key = (account, from);
        if self.requests.contains_key(&key) {
            return false;
        }
        let mine = self.requests.keys().filter(|(a, _)| *a == account).count();
        if mine >= MAX_REQUESTS
            && let Some(pos) = self.request_order.iter().position(|(a, _)| *a == account)
            && let Some(oldest) = self.request_order.remove(pos)
        {
            self.requests.remove(&oldest);
        }
        self.request_order.push_back(key.clone());
        self.requests.insert(key, false);
        true
    }

    /// Removes a request from the list.
    pub(crate) fn remove_request(&mut self, key: &(AccountId, String)) {
        self.requests.remove(key);
        self.request_order.retain(|k| k != key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AccountId;

    fn line(body: &str) -> ChatLine {
        super::super::private::notice(body.into())
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
}
