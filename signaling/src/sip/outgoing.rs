//! One outgoing INVITE, from the first send to its final answer. A digest challenge is
//! answered only for the account's realm (`realm`), and only before the far end has set
//! up an early dialog: a proxy on the way challenges before the call reaches anyone, so a
//! challenge after a provisional answer with a To tag can only come from the callee (or
//! something behind it), which has no business with the password. A call the user hung
//! up meanwhile is never sent again; an INVITE already sent again is cancelled; and a
//! call answered after it was given up is ended with a BYE, so the far end never stays
//! connected to nobody.

use super::digest::{self, Challenged};
use super::event::{CallKey, EndReason, SipEvent};
use super::realm::{self, AccountRealms, withheld_words};
use super::stack::Shared;
use rsipstack::dialog::authenticate::Credential;
use rsipstack::dialog::dialog::DialogStateSender;
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::dialog::invitation::{InviteAsyncResult, InviteOption};
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::{Response, StatusCodeKind};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Longest the BYE for a call answered after it was given up is waited for.
const BYE_WITHIN: Duration = Duration::from_secs(40);

/// An INVITE in flight and what answering its challenges needs.
pub(super) struct Invite {
    pub(super) shared: Arc<Shared>,
    pub(super) realms: Arc<AccountRealms>,
    pub(super) dialogs: Arc<DialogLayer>,
    pub(super) states: DialogStateSender,
    /// The call, as first known (a retried INVITE's dialog is an alias of it).
    pub(super) key: CallKey,
    /// The account's password; `None` on a direct call, which never sends one.
    pub(super) credential: Option<Credential>,
    /// What was sent.
    pub(super) option: InviteOption,
    /// The dialog of the INVITE in flight.
    pub(super) dialog: InviteDialog,
}

/// What became of a 401/407.
enum Challenge {
    /// Sent again with our answer: wait for that one.
    Answered(JoinHandle<InviteAsyncResult>),
    /// Not answered: the call ends with this response, or with the words saying why the
    /// password was withheld.
    Final(Option<String>),
}

impl Invite {
    /// Drives the INVITE to its end and reports it: Answered, or Ended with the reason.
    pub(super) async fn run(mut self, mut outcome: JoinHandle<InviteAsyncResult>) {
        let mut answered = 0;
        let (result, withheld) = loop {
            let result = match outcome.await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "INVITE task failed");
                    return;
                }
            };
            let resp = match &result {
                Ok((_, Some(resp))) if matches!(resp.status_code.code(), 401 | 407) => resp.clone(),
                _ => break (result, None),
            };
            match self.challenge(&resp, answered) {
                Challenge::Answered(next) => {
                    answered += 1;
                    outcome = next;
                }
                Challenge::Final(withheld) => break (result, withheld),
            }
        };
        let key = self.key.clone();
        if let Some(words) = withheld {
            self.shared
                .end_outgoing(&key, EndReason::CredentialsWithheld(words));
            return;
        }
        match result {
            Ok((_, Some(resp))) if resp.status_code.kind() == StatusCodeKind::Successful => {
                if !self.shared.wanted(&key) {
                    self.answered_too_late().await;
                    return;
                }
                if self
                    .shared
                    .established
                    .lock()
                    .map(|mut e| e.insert(key.clone()))
                    .unwrap_or(false)
                {
                    self.shared.emit(SipEvent::Answered {
                        call: key,
                        sdp: resp.body().to_vec(),
                    });
                }
            }
            Ok((_, Some(resp))) => self
                .shared
                .end_outgoing(&key, EndReason::from_status(&resp.status_code)),
            Ok((_, None)) | Err(_) => self.shared.end_outgoing(&key, EndReason::Timeout),
        }
    }

    /// Answers `resp`'s challenge with a new INVITE when that is allowed; otherwise says
    /// why not.
    fn challenge(&mut self, resp: &Response, answered: u32) -> Challenge {
        if !self.shared.wanted(&self.key) {
            // Hung up before the challenge came: nothing is sent again.
            return Challenge::Final(None);
        }
        let Some(cred) = self.credential.as_ref() else {
            return Challenge::Final(digest::realm_asked(resp).map(|realm| {
                format!(
                    "the other side asked for a password (realm {}); a direct call never sends one",
                    realm::shown(&realm)
                )
            }));
        };
        if !self.dialog.id().remote_tag.is_empty() {
            let realm = digest::realm_asked(resp).unwrap_or_default();
            tracing::warn!(realm = %realm::shown(&realm), "a challenge after the call reached the callee: not answered");
            return Challenge::Final(Some(early_words(&realm)));
        }
        if answered > 0 && digest::says_stale(resp) {
            let realm = digest::realm_asked(resp).unwrap_or_default();
            return Challenge::Final(Some(format!(
                "the other side asked for your password again (realm {}), saying the first answer was stale; a call answers one challenge, so it was not sent twice: call again",
                realm::shown(&realm)
            )));
        }
        let retry = match answer(resp, cred, &self.option, answered, &self.realms) {
            Ok(Some(retry)) => retry,
            Ok(None) => return Challenge::Final(None),
            Err(realm) => {
                tracing::warn!(realm = %realm::shown(&realm), "not sending the password to a foreign realm");
                return Challenge::Final(Some(withheld_words(
                    "the other side or a server on the way",
                    &realm,
                    &self.realms.known(cred.realm.as_deref()),
                )));
            }
        };
        self.option = retry;
        if self.option.call_id.is_none() {
            self.option.call_id = Some(self.key.call_id().to_owned());
        }
        let (d, next) = match self
            .dialogs
            .do_invite_async(self.option.clone(), self.states.clone())
        {
            Ok(sent) => sent,
            Err(e) => {
                tracing::warn!(error = %e, "authenticated INVITE");
                return Challenge::Final(None);
            }
        };
        let raw = CallKey::of(&d.id());
        if let Ok(mut a) = self.shared.aliases.lock() {
            a.insert(raw.clone(), self.key.clone());
        }
        if let Ok(mut c) = self.shared.challengeable.lock() {
            c.insert(raw);
        }
        // Published before the hang-up flag is read, as `SipStack::hangup` sets the flag
        // before it reads the dialog: a hang-up racing this sees the new dialog, or is
        // seen here.
        let present = self.shared.replace_call(&self.key, d.clone());
        if !present || self.shared.hung_up(&self.key) {
            // Given up while the answer went out: cancel it (rsipstack sends the CANCEL
            // once it may, and ends a 2xx crossing it with a BYE).
            let cancelled = d.clone();
            tokio::spawn(async move {
                if let Err(e) = cancelled.hangup().await {
                    tracing::debug!(error = %e, "cancelling the INVITE sent again");
                }
            });
        }
        self.dialog = d;
        Challenge::Answered(next)
    }

    /// A 2xx for a call that was hung up or ended meanwhile: it is ended with a BYE (a
    /// no-op when rsipstack already sent one for a cancelled INVITE), and reported as
    /// hung up, never as answered.
    async fn answered_too_late(&self) {
        tracing::info!(call = %self.key, "answered after it was given up: sending BYE");
        match tokio::time::timeout(BYE_WITHIN, self.dialog.bye()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "BYE for a call answered too late"),
            Err(_) => tracing::debug!("no answer to the BYE for a call answered too late"),
        }
        self.dialogs.remove_dialog(&self.dialog.id());
        self.shared.end_outgoing(&self.key, EndReason::LocalHangup);
    }
}

/// Why a challenge that came after the call reached the far end was not answered.
fn early_words(realm: &str) -> String {
    format!(
        "the other side asked for your password (realm {}) after the call had reached it; the servers of your account ask before that, so it was not sent",
        realm::shown(realm)
    )
}

/// The INVITE to send again with our answer to `resp`'s challenge; `None` when we
/// cannot answer it or already answered one for this call; `Err(realm)` when it asks for
/// a realm that is not the account's (nothing is sent). A call answers one challenge at
/// most, even one saying our nonce went `stale`: the servers of the account challenge an
/// INVITE once, and a second challenge (stale or not) can come from the callee, which
/// would get a second digest to guess at.
pub(super) fn answer(
    resp: &Response,
    cred: &Credential,
    sent: &InviteOption,
    answered: u32,
    realms: &AccountRealms,
) -> Result<Option<InviteOption>, String> {
    if answered > 0 {
        return Ok(None);
    }
    let permitted = |realm: &str| realms.permits(realm, cred.realm.as_deref());
    let uri = sent.callee.to_string();
    let auth = match digest::authorization(resp, cred, "INVITE", &uri, answered, permitted) {
        Challenged::Answer { header, .. } => header,
        Challenged::Unanswerable => return Ok(None),
        Challenged::Withheld(realm) => return Err(realm),
    };
    let mut retry = sent.clone();
    let mut headers = retry.headers.take().unwrap_or_default();
    headers.retain(|h| !digest::is_authorization(h));
    headers.push(auth);
    retry.headers = Some(headers);
    Ok(Some(retry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_words_for_a_late_challenge_say_what_happened() {
        let words = early_words("evil\"\n");
        assert!(words.contains(r#"realm "evil\"\n""#), "{words}");
        assert!(words.ends_with("so it was not sent"), "{words}");
        assert!(!words.contains('\n'));
    }
}
