//! The outbox of a [`ChatCore`]: every message delivered exactly once across
//! reconnects, resent with the same id until the server acknowledges it.

use super::*;

impl ChatCore {
    /// The server acknowledged (or at least took) message `id`.
    pub fn delivered(&mut self, id: &str) {
        if self.inflight.remove(id).is_some() {
            self.events
                .push_back(XmppEvent::Delivered { id: id.to_owned() });
        }
    }

    pub(super) fn flush_unsent(&mut self) {
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

    pub(super) fn check_body(&mut self, body: &str) -> bool {
        if body.is_empty() || body.len() > MAX_BODY {
            self.events.push_back(XmppEvent::Error {
                reason: format!("a message must be 1 to {MAX_BODY} bytes"),
            });
            return false;
        }
        true
    }
}
