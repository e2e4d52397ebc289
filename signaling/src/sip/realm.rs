//! Which digest realms may receive an account's password. A digest answer lets whoever
//! challenged run an offline dictionary attack on the password, so only the account's
//! own realm gets one: the realm its registrar challenged with (learned when a
//! registration is accepted), or one the user configured (`Credential::realm`). A
//! challenge for any other realm — from the callee, or from a hop on the way — is not
//! answered; Linphone keeps its credentials per realm for the same reason.

use std::collections::BTreeSet;
use std::sync::Mutex;

/// Realms remembered per account; a registrar uses one, a few cover a realm change.
const MAX_REALMS: usize = 4;
/// Longest realm we accept at all (real ones are a domain name).
const MAX_REALM: usize = 256;
/// Characters of a realm shown to the user.
const SHOWN: usize = 64;

/// The realms an account's password may go to.
#[derive(Debug, Default)]
pub(crate) struct AccountRealms {
    learned: Mutex<BTreeSet<String>>,
}

impl AccountRealms {
    /// Whether a challenge for `realm` on a call (or any request but REGISTER) may be
    /// answered: only for a realm the registrar used or the user configured.
    pub(crate) fn permits(&self, realm: &str, configured: Option<&str>) -> bool {
        configured == Some(realm)
            || self
                .learned
                .lock()
                .map(|l| l.contains(realm))
                .unwrap_or(false)
    }

    /// Whether the registrar's challenge for `realm` may be answered. The registrar is
    /// the server the user chose, so before any realm is known (and none configured) its
    /// realm is taken on first use; afterwards it must stay one we know.
    pub(crate) fn permits_registrar(&self, realm: &str, configured: Option<&str>) -> bool {
        if self.permits(realm, configured) {
            return true;
        }
        configured.is_none()
            && realm.len() <= MAX_REALM
            && self.learned.lock().map(|l| l.is_empty()).unwrap_or(false)
    }

    /// Remembers `realm` as the account's, once the registrar accepted our answer.
    pub(crate) fn learn(&self, realm: &str) {
        if realm.len() > MAX_REALM {
            return;
        }
        if let Ok(mut l) = self.learned.lock()
            && (l.len() < MAX_REALMS || l.contains(realm))
        {
            l.insert(realm.to_owned());
        }
    }

    /// The realms known to be the account's, for messages.
    pub(crate) fn known(&self, configured: Option<&str>) -> Vec<String> {
        let mut out: Vec<String> = self
            .learned
            .lock()
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default();
        if let Some(c) = configured
            && !out.iter().any(|r| r == c)
        {
            out.push(c.to_owned());
        }
        out
    }
}

/// A realm from the network, quoted and cut short for a message: control characters
/// and quotes are escaped so it cannot forge the rest of the sentence.
pub(crate) fn shown(realm: &str) -> String {
    let cut: String = realm.chars().take(SHOWN).collect();
    if cut.len() < realm.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

/// Words for a challenge we did not answer: who asked, for which realm, and what the
/// account's realms are.
pub(crate) fn withheld_words(asker: &str, realm: &str, ours: &[String]) -> String {
    let ours = match ours {
        [] => "your account's realm is not known yet: it is learned when the registrar accepts your password".to_owned(),
        [one] => format!("your account's realm is {}", shown(one)),
        many => format!(
            "your account's realms are {}",
            many.iter().map(|r| shown(r)).collect::<Vec<_>>().join(", ")
        ),
    };
    format!(
        "{asker} asked for your password for realm {}, which is not your account's realm ({ours}); it was not sent",
        shown(realm)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_registrars_realm_or_a_configured_one_gets_the_password() {
        let r = AccountRealms::default();
        // Before registering, a call's challenge is refused, the registrar's taken.
        assert!(!r.permits("example.org", None));
        assert!(r.permits_registrar("example.org", None));
        r.learn("example.org");
        assert!(r.permits("example.org", None));
        assert!(!r.permits("evil.example", None));
        assert!(!r.permits("Example.org", None), "realms compare exactly");
        // Once known, the registrar cannot switch the password to another realm.
        assert!(!r.permits_registrar("evil.example", None));
        // A configured realm is the account's too, and disables first-use trust.
        let c = AccountRealms::default();
        assert!(c.permits("proxy.example", Some("proxy.example")));
        assert!(!c.permits_registrar("other.example", Some("proxy.example")));
        assert_eq!(
            r.known(Some("proxy.example")),
            vec!["example.org".to_owned(), "proxy.example".to_owned()]
        );
    }

    #[test]
    fn remembered_realms_are_bounded() {
        let r = AccountRealms::default();
        for i in 0..100 {
            r.learn(&format!("r{i}"));
        }
        r.learn(&"x".repeat(MAX_REALM + 1));
        assert_eq!(r.known(None).len(), MAX_REALMS);
        assert!(!r.permits_registrar(&"y".repeat(MAX_REALM + 1), None));
    }

    #[test]
    fn a_hostile_realm_cannot_forge_the_message() {
        let words = withheld_words(
            "the other side",
            "evil\"; it was sent\n",
            &["example.org".to_owned()],
        );
        assert!(!words.contains('\n'), "{words}");
        assert!(words.contains(r#""evil\"; it was sent\n""#), "{words}");
        assert!(words.ends_with("it was not sent"), "{words}");
        assert!(shown(&"a".repeat(500)).len() < 80);
    }
}
