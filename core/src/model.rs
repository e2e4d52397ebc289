//! Account configuration: what the user set up, as stored in the profile.

use crate::error::{CoreError, Result};
use crate::secret::Secret;
use serde::{Deserialize, Serialize};

/// Stable identifier of an account in this profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AccountId(pub i64);

impl std::fmt::Display for AccountId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Which network an account lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    /// Voice (and later video) calls.
    Sip,
    /// Chat.
    Xmpp,
}

impl Protocol {
    /// Lower-case name used in the database and on the command line.
    pub fn as_str(&self) -> &'static str {
        match self {
            Protocol::Sip => "sip",
            Protocol::Xmpp => "xmpp",
        }
    }

    fn parse(s: &str) -> Option<Protocol> {
        match s {
            "sip" => Some(Protocol::Sip),
            "xmpp" => Some(Protocol::Xmpp),
            _ => None,
        }
    }
}

/// SIP signalling transport: the SIP stack's own type (TLS hides who calls whom from
/// the network, not from the server).
pub use hush_signaling::sip::Transport;

/// What a call may do when ZRTP cannot be negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum EncryptionPolicy {
    /// No media leaves unencrypted; a call that cannot become secure is ended.
    #[default]
    Mandatory,
    /// The call may continue in cleartext, and says so everywhere.
    BestEffort,
}

/// Settings of a SIP account.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SipSettings {
    /// Registrar URI; `None` registers at the address's domain. Empty for direct-IP use.
    pub registrar: Option<String>,
    /// Outbound proxy URI, if any.
    pub outbound_proxy: Option<String>,
    /// Signalling transport.
    pub transport: Transport,
    /// For TLS: a PEM file of certificates to trust besides the system's (a private CA,
    /// or a self-hosted server's own certificate).
    #[serde(default)]
    pub tls_ca_file: Option<String>,
    /// Media encryption policy.
    pub encryption: EncryptionPolicy,
    /// The digest realm the password belongs to, when the user knows it: only that realm
    /// gets an answer (the registrar's first challenge is then not taken on trust).
    /// `None` learns it from the registrar's first challenge.
    #[serde(default)]
    pub realm: Option<String>,
}

/// Settings of an XMPP account.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct XmppSettings {
    /// `host:port` to connect to instead of the SRV lookup of the JID's domain.
    pub server: Option<String>,
    /// SHA-256 of a self-hosted server's certificate that the user chose to trust.
    pub pinned_cert_sha256: Option<String>,
    /// SOCKS5 proxy (`host:port`), e.g. Tor's 127.0.0.1:9050.
    pub socks5_proxy: Option<String>,
    /// When to use OTR (contacts may override).
    #[serde(default)]
    pub otr_policy: OtrPolicySetting,
}

/// When to make a chat private with OTR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum OtrPolicySetting {
    /// Only when the user starts it.
    Manual,
    /// When the other side shows it can.
    #[default]
    Opportunistic,
    /// Always: nothing is ever sent in plaintext.
    Require,
}

/// Protocol-specific settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountSettings {
    /// A SIP account.
    Sip(SipSettings),
    /// An XMPP account.
    Xmpp(XmppSettings),
}

impl AccountSettings {
    /// The protocol these settings belong to.
    pub fn protocol(&self) -> Protocol {
        match self {
            AccountSettings::Sip(_) => Protocol::Sip,
            AccountSettings::Xmpp(_) => Protocol::Xmpp,
        }
    }
}

/// What the user fills in to add an account.
#[derive(Debug, Clone)]
pub struct NewAccount {
    /// `user@domain` (a `sip:` prefix is accepted and removed).
    pub address: String,
    /// Optional friendly name.
    pub display_name: Option<String>,
    /// The account password. Only stored when `remember_password` is set.
    pub password: Option<Secret>,
    /// Store the password sealed in the vault; otherwise ask each session.
    pub remember_password: bool,
    /// Protocol-specific settings.
    pub settings: AccountSettings,
}

/// A configured account as the profile holds it (no secrets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountConfig {
    /// Its identifier.
    pub id: AccountId,
    /// Normalised `user@domain`.
    pub address: String,
    /// Optional friendly name.
    pub display_name: Option<String>,
    /// Whether a password is kept in the vault.
    pub remember_password: bool,
    /// Protocol-specific settings.
    pub settings: AccountSettings,
}

impl AccountConfig {
    /// Its protocol.
    pub fn protocol(&self) -> Protocol {
        self.settings.protocol()
    }

    pub(crate) fn from_row(
        id: i64,
        protocol: &str,
        address: String,
        display_name: Option<String>,
        remember_password: bool,
        settings: &str,
    ) -> Result<AccountConfig> {
        let settings: AccountSettings = serde_json::from_str(settings).map_err(|e| {
            CoreError::InvalidInput(format!("account {id}: unreadable settings: {e}"))
        })?;
        if Protocol::parse(protocol) != Some(settings.protocol()) {
            return Err(CoreError::InvalidInput(format!(
                "account {id}: protocol does not match its settings"
            )));
        }
        Ok(AccountConfig {
            id: AccountId(id),
            address,
            display_name,
            remember_password,
            settings,
        })
    }
}

/// Longest address we accept (RFC 7622 caps each JID part at 1023 bytes).
const MAX_ADDRESS_LEN: usize = 1023;

/// Checks and normalises a `user@domain[:port]` address for `protocol`.
pub fn normalize_address(protocol: Protocol, input: &str) -> Result<String> {
    let mut s = input.trim();
    if protocol == Protocol::Sip {
        for prefix in ["sip:", "sips:", "SIP:", "SIPS:"] {
            if let Some(rest) = s.strip_prefix(prefix) {
                s = rest;
                break;
            }
        }
    }
    let bad = |why: &str| {
        CoreError::InvalidInput(format!(
            "{:?} is not a valid {} address: {why}",
            input,
            protocol.as_str()
        ))
    };
    if s.is_empty() {
        return Err(bad("it is empty"));
    }
    if s.len() > MAX_ADDRESS_LEN {
        return Err(bad("it is too long"));
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("it contains spaces or control characters"));
    }
    let Some((user, domain)) = s.split_once('@') else {
        return Err(bad("expected user@domain"));
    };
    if user.is_empty() || domain.is_empty() || domain.contains('@') {
        return Err(bad("expected user@domain"));
    }
    if protocol == Protocol::Xmpp && (domain.contains('/') || domain.contains(':')) {
        return Err(bad(
            "give the bare JID (no resource or port); set the server separately",
        ));
    }
    if domain.starts_with('.') || domain.ends_with('.') || domain.starts_with(':') {
        return Err(bad("the domain is malformed"));
    }
    Ok(format!("{user}@{}", domain.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_normalised_or_refused() {
        assert_eq!(
            normalize_address(Protocol::Sip, " sip:alice@Example.org:5070 ")
                .ok()
                .as_deref(),
            Some("alice@example.org:5070")
        );
        assert_eq!(
            normalize_address(Protocol::Xmpp, "bob@Localhost")
                .ok()
                .as_deref(),
            Some("bob@localhost")
        );
        for bad in [
            "", "alice", "@x", "a@", "a b@c", "a@b@c", "a@.x", "a@\u{7}x",
        ] {
            assert!(normalize_address(Protocol::Sip, bad).is_err(), "{bad:?}");
        }
        assert!(normalize_address(Protocol::Xmpp, "a@b/res").is_err());
        assert!(normalize_address(Protocol::Xmpp, &format!("a@{}", "x".repeat(2000))).is_err());
    }
}
