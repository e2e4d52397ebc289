//! The SASL login: which mechanism and which TLS channel binding to use, decided before
//! anything is sent, then the exchange, with each way it can fail told apart.
//!
//! A `-PLUS` mechanism is used only with a binding type the server announces
//! (XEP-0440) and we can make. ejabberd before 24.02 offers `-PLUS` but announces no
//! type and checks `tls-unique` even under TLS 1.3, where rustls cannot make it, so
//! "guess tls-exporter" fails there; such a login goes unbound, with `y` in the GS2
//! header so a server that does bind sees that an offer was stripped. A refused bound
//! login is an error, never retried unbound.

use super::scram::{Binding, ScramClient, ScramHash, printable};
use super::stream::next_element;
use crate::SignalingError;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use futures::SinkExt;
use std::collections::BTreeSet;
use tokio::io::{AsyncBufRead, AsyncWrite};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::sasl::{DefinedCondition, Failure, Nonza, Response};
use tokio_xmpp::parsers::sasl_cb::{SaslChannelBinding, Type};
use tokio_xmpp::parsers::stream_error::DefinedCondition as StreamCondition;
use tokio_xmpp::xmlstream::{InitiatingStream, XmppStream, XmppStreamElement};

/// Most rounds a SASL exchange may take before we call the server broken.
const MAX_ROUNDS: usize = 4;

/// What the TLS connection can bind a login to.
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsFacts {
    /// RFC 9266 `tls-exporter` data (TLS 1.3 only).
    pub(crate) exporter: Option<Vec<u8>>,
    /// RFC 5929 `tls-server-end-point` data (when the certificate's hash is defined).
    pub(crate) end_point: Option<Vec<u8>>,
}

/// How a login went, for the account's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginSecurity {
    /// The SASL mechanism used.
    pub mechanism: &'static str,
    /// The TLS channel binding the login was tied to, if any.
    pub binding: Option<&'static str>,
}

/// The SCRAM login chosen. PLAIN is never one: it hands the password itself to whoever
/// holds the TLS connection's other end, and a TLS interceptor that strips the SCRAM
/// offer would get it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    hash: ScramHash,
    binding: Binding,
}

impl Plan {
    fn security(&self) -> LoginSecurity {
        match &self.binding {
            Binding::Bound { kind, .. } => LoginSecurity {
                mechanism: self.hash.mechanism(true),
                binding: Some(kind),
            },
            _ => LoginSecurity {
                mechanism: self.hash.mechanism(false),
                binding: None,
            },
        }
    }
}

/// Picks the mechanism and binding from what the server offers.
pub(crate) fn plan(
    offered: &BTreeSet<String>,
    announced: Option<&SaslChannelBinding>,
    tls: &TlsFacts,
) -> Result<Plan, SignalingError> {
    let announces = |t: Type| announced.is_some_and(|a| a.types.contains(&t));
    let shared = if announces(Type::TlsExporter)
        && let Some(data) = &tls.exporter
    {
        Some(("tls-exporter", data))
    } else if announces(Type::TlsServerEndPoint)
        && let Some(data) = &tls.end_point
    {
        Some(("tls-server-end-point", data))
    } else {
        None
    };
    if let Some((kind, data)) = shared
        && let Some(hash) = ScramHash::ALL
            .into_iter()
            .find(|h| offered.contains(h.mechanism(true)))
    {
        return Ok(Plan {
            hash,
            binding: Binding::Bound {
                kind,
                data: data.clone(),
            },
        });
    }
    if let Some(hash) = ScramHash::ALL
        .into_iter()
        .find(|h| offered.contains(h.mechanism(false)))
    {
        return Ok(Plan {
            hash,
            binding: Binding::NoneShared,
        });
    }
    let list: Vec<String> = offered.iter().take(8).map(|m| printable(m)).collect();
    Err(SignalingError::LoginMechanism(if list.is_empty() {
        "nothing".into()
    } else {
        list.join(", ")
    }))
}

/// Runs the login on a TLS stream; on success the stream is ready for its reset.
/// `offered_plus`: the server offered a `-PLUS` mechanism (so it may check the binding).
pub(crate) async fn authenticate<S: AsyncBufRead + AsyncWrite + Unpin>(
    mut stream: XmppStream<S>,
    plan: Plan,
    offered_plus: bool,
    username: &str,
    password: &str,
) -> Result<(InitiatingStream<S>, LoginSecurity), SignalingError> {
    let security = plan.security();
    let bound = security.binding.is_some();
    let said_y = plan.binding == Binding::NoneShared;
    let Plan { hash, binding } = plan;
    let mut scram = ScramClient::new(
        hash,
        binding,
        username,
        password,
        ScramClient::random_nonce()?,
    )?;
    // The client-first message holds no secret (name and nonce).
    let auth: Element = format!(
        "<auth xmlns='{}' mechanism='{}'>{}</auth>",
        ns::SASL,
        security.mechanism,
        B64.encode(scram.client_first())
    )
    .parse()
    .map_err(|e| SignalingError::Protocol(format!("building the login: {e}")))?;
    stream.send(&auth).await.map_err(io)?;
    drop(auth);
    for _ in 0..MAX_ROUNDS {
        match next_element(&mut stream)
            .await
            .map_err(super::classify::classify)?
        {
            XmppStreamElement::Sasl(Nonza::Challenge(c)) => {
                let reply = scram.next(&c.data).map_err(|e| rebind(e, bound))?;
                stream
                    .send(&XmppStreamElement::Sasl(Nonza::Response(Response {
                        data: reply,
                    })))
                    .await
                    .map_err(io)?;
            }
            XmppStreamElement::Sasl(Nonza::Success(ok)) => {
                if !scram.done() {
                    scram.finish(&ok.data).map_err(|e| rebind(e, bound))?;
                }
                tracing::info!(
                    mechanism = security.mechanism,
                    binding = security.binding.unwrap_or("none"),
                    "XMPP login accepted"
                );
                return Ok((stream.initiate_reset(), security));
            }
            XmppStreamElement::Sasl(Nonza::Failure(f)) => {
                return Err(failure(&f, bound, said_y && offered_plus));
            }
            XmppStreamElement::StreamError(e) => {
                let e = e.0;
                let text = e.texts.values().next().map(|t| printable(t));
                return Err(stream_failure(&e.condition, text));
            }
            other => {
                return Err(SignalingError::Protocol(format!(
                    "unexpected {} during the login",
                    element_name(&other)
                )));
            }
        }
    }
    Err(SignalingError::Protocol(
        "the server's login took too many rounds".into(),
    ))
}

fn io(e: std::io::Error) -> SignalingError {
    super::classify::classify(e.into())
}

fn element_name(e: &XmppStreamElement) -> &'static str {
    match e {
        XmppStreamElement::Stanza(_) => "stanza",
        XmppStreamElement::Sasl(_) => "SASL element",
        XmppStreamElement::Starttls(_) => "STARTTLS element",
        XmppStreamElement::SM(_) => "stream-management element",
        _ => "element",
    }
}

/// What the server's words say, lower-cased, for telling its refusals apart.
fn says(text: &Option<String>, words: &[&str]) -> bool {
    text.as_deref().is_some_and(|t| {
        let t = t.to_lowercase();
        words.iter().any(|w| t.contains(w))
    })
}

fn with(base: &str, text: &Option<String>) -> String {
    match text {
        Some(t) if !t.is_empty() => format!("{base}: {t}"),
        _ => base.to_owned(),
    }
}

const RATE_WORDS: &[&str] = &[
    "too many",
    "too quickly",
    "rate limit",
    "unblocked",
    "slow down",
];
const POLICY_WORDS: &[&str] = &["policy", "denied", "blocked", "banned", "forbidden"];
const BINDING_WORDS: &[&str] = &["binding", "downgrade"];

/// A SASL `<failure/>`, told apart: only a plain refusal of the credentials is a wrong
/// password.
/// `y_under_plus`: we said `y` to a server that offered `-PLUS`; a server that checks
/// bindings refuses that as a stripped offer.
pub(crate) fn failure(f: &Failure, bound: bool, y_under_plus: bool) -> SignalingError {
    let text = f
        .texts
        .values()
        .next()
        .map(|t| printable(t))
        .filter(|t| !t.is_empty());
    let binding = says(&text, BINDING_WORDS);
    match f.defined_condition {
        DefinedCondition::MalformedRequest if y_under_plus && (text.is_none() || binding) => {
            SignalingError::LoginBinding(with(
                "it offers bound logins but announces no binding type Hushphone can make, and \
             refused an unbound one",
                &text,
            ))
        }
        DefinedCondition::NotAuthorized | DefinedCondition::MalformedRequest if binding => {
            SignalingError::LoginBinding(with(
                if bound {
                    "the binding did not match"
                } else {
                    "the server expected a binding"
                },
                &text,
            ))
        }
        DefinedCondition::NotAuthorized | DefinedCondition::TemporaryAuthFailure
            if says(&text, RATE_WORDS) =>
        {
            SignalingError::LoginRateLimited(with("too many attempts", &text))
        }
        DefinedCondition::NotAuthorized if says(&text, POLICY_WORDS) => {
            SignalingError::LoginPolicy(with("access denied", &text))
        }
        // A bound login refused without a word: the password, or the binding.
        DefinedCondition::NotAuthorized if bound && text.is_none() => SignalingError::LoginBinding(
            "the server said only 'not authorized': either the password is wrong or the \
                 binding did not match"
                .into(),
        ),
        DefinedCondition::NotAuthorized => SignalingError::AuthFailed,
        DefinedCondition::AccountDisabled => {
            SignalingError::LoginPolicy(with("this account is disabled", &text))
        }
        DefinedCondition::CredentialsExpired => {
            SignalingError::LoginPolicy(with("the password has expired", &text))
        }
        DefinedCondition::TemporaryAuthFailure => {
            SignalingError::Unreachable(with("the server cannot check logins right now", &text))
        }
        DefinedCondition::InvalidMechanism | DefinedCondition::MechanismTooWeak => {
            SignalingError::LoginMechanism(with("it refused the one we chose", &text))
        }
        ref other => SignalingError::LoginRefused(with(&format!("{other:?}"), &text)),
    }
}

/// A SCRAM `e=` in the server's last message, told apart like a `<failure/>`.
fn rebind(e: SignalingError, bound: bool) -> SignalingError {
    let SignalingError::LoginRefused(why) = e else {
        return e;
    };
    // RFC 5802 §7 server-error-value.
    match why.as_str() {
        "channel-bindings-dont-match"
        | "server-does-support-channel-binding"
        | "channel-binding-not-supported"
        | "unsupported-channel-binding-type" => SignalingError::LoginBinding(why),
        "invalid-proof" if bound => SignalingError::LoginBinding(
            "the server refused the proof: either the password is wrong or the binding did \
             not match"
                .into(),
        ),
        "invalid-proof" | "unknown-user" => SignalingError::AuthFailed,
        "no-resources" | "other-error" => {
            SignalingError::Unreachable(format!("the server cannot check logins now ({why})"))
        }
        _ => SignalingError::LoginRefused(why),
    }
}

/// A stream error during the login.
pub(crate) fn stream_failure(condition: &StreamCondition, text: Option<String>) -> SignalingError {
    let text = text.filter(|t| !t.is_empty());
    match condition {
        StreamCondition::PolicyViolation if says(&text, RATE_WORDS) => {
            SignalingError::LoginRateLimited(with("too many attempts", &text))
        }
        StreamCondition::PolicyViolation => {
            SignalingError::LoginPolicy(with("policy violation", &text))
        }
        // What may pass by itself.
        StreamCondition::ResourceConstraint
        | StreamCondition::SystemShutdown
        | StreamCondition::Reset
        | StreamCondition::ConnectionTimeout
        | StreamCondition::InternalServerError
        | StreamCondition::RemoteConnectionFailed => SignalingError::Unreachable(with(
            &format!("the server ended the stream ({condition:?})"),
            &text,
        )),
        // What asking again would only repeat.
        other => SignalingError::LoginRefused(with(&format!("{other:?}"), &text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn offered(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn facts() -> TlsFacts {
        TlsFacts {
            exporter: Some(vec![1; 32]),
            end_point: Some(vec![2; 32]),
        }
    }

    const EJABBERD_23: &[&str] = &[
        "DIGEST-MD5",
        "PLAIN",
        "SCRAM-SHA-512-PLUS",
        "SCRAM-SHA-512",
        "SCRAM-SHA-256-PLUS",
        "SCRAM-SHA-256",
        "SCRAM-SHA-1-PLUS",
        "SCRAM-SHA-1",
        "X-OAUTH2",
    ];

    #[test]
    fn plus_offered_without_announced_types_goes_unbound_saying_y() {
        let p = plan(&offered(EJABBERD_23), None, &facts()).unwrap();
        assert_eq!(
            p,
            Plan {
                hash: ScramHash::Sha512,
                binding: Binding::NoneShared
            }
        );
        assert_eq!(p.security().mechanism, "SCRAM-SHA-512");
    }

    #[test]
    fn an_announced_type_we_can_make_binds_the_strongest_plus() {
        let cb = SaslChannelBinding {
            types: vec![Type::TlsServerEndPoint, Type::TlsExporter],
        };
        let p = plan(&offered(EJABBERD_23), Some(&cb), &facts()).unwrap();
        assert_eq!(
            p.security(),
            LoginSecurity {
                mechanism: "SCRAM-SHA-512-PLUS",
                binding: Some("tls-exporter")
            }
        );
        // Under TLS 1.2 there is no exporter: the certificate binding is next.
        let tls12 = TlsFacts {
            exporter: None,
            ..facts()
        };
        let p = plan(
            &offered(&["SCRAM-SHA-1-PLUS", "SCRAM-SHA-256"]),
            Some(&cb),
            &tls12,
        )
        .unwrap();
        assert_eq!(
            p,
            Plan {
                hash: ScramHash::Sha1,
                binding: Binding::Bound {
                    kind: "tls-server-end-point",
                    data: vec![2; 32]
                }
            }
        );
    }

    #[test]
    fn only_types_we_cannot_make_leave_the_login_unbound() {
        let cb = SaslChannelBinding {
            types: vec![Type::TlsUnique],
        };
        let p = plan(
            &offered(&["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]),
            Some(&cb),
            &facts(),
        )
        .unwrap();
        assert_eq!(p.security().binding, None);
        assert_eq!(p.security().mechanism, "SCRAM-SHA-256");
    }

    #[test]
    fn plain_is_never_chosen_and_nothing_we_know_is_an_error_naming_the_offer() {
        let e = plan(&offered(&["PLAIN", "DIGEST-MD5"]), None, &facts()).unwrap_err();
        assert!(e.to_string().contains("PLAIN"), "{e}");
        assert_eq!(
            plan(&offered(&["PLAIN", "SCRAM-SHA-1"]), None, &facts())
                .unwrap()
                .security()
                .mechanism,
            "SCRAM-SHA-1"
        );
        let e = plan(&offered(&["DIGEST-MD5", "X-OAUTH2"]), None, &facts()).unwrap_err();
        assert!(matches!(e, SignalingError::LoginMechanism(_)), "{e}");
        assert!(e.to_string().contains("DIGEST-MD5, X-OAUTH2"), "{e}");
        assert!(e.is_permanent());
    }

    fn fail(condition: DefinedCondition, text: Option<&str>) -> Failure {
        let mut texts = BTreeMap::new();
        if let Some(t) = text {
            texts.insert("en".to_owned(), t.to_owned());
        }
        Failure {
            defined_condition: condition,
            texts,
        }
    }

    #[test]
    fn each_refusal_has_its_own_words_and_only_bad_credentials_say_wrong_password() {
        use DefinedCondition as C;
        let cases: Vec<(Failure, bool, &str)> = vec![
            (
                fail(C::NotAuthorized, Some("Invalid username or password")),
                false,
                "wrong username or password",
            ),
            (
                fail(C::NotAuthorized, None),
                false,
                "wrong username or password",
            ),
            (
                fail(C::NotAuthorized, None),
                true,
                "either the password is wrong or the binding",
            ),
            (
                fail(C::MalformedRequest, None),
                false,
                "refused the login: MalformedRequest",
            ),
            (
                fail(C::NotAuthorized, Some("Invalid channel binding")),
                true,
                "tie this login to the TLS connection",
            ),
            (
                fail(C::NotAuthorized, Some("Access denied by service policy")),
                false,
                "by its policy",
            ),
            (
                fail(C::TemporaryAuthFailure, Some("Too many failed attempts")),
                false,
                "too many attempts",
            ),
            (fail(C::AccountDisabled, None), false, "disabled"),
            (fail(C::CredentialsExpired, None), false, "expired"),
            (fail(C::InvalidMechanism, None), false, "no login method"),
        ];
        // Only a server that cannot check logins now is worth asking again.
        let e = failure(&fail(C::TemporaryAuthFailure, None), false, false);
        assert!(!e.is_permanent() && e.to_string().contains("cannot check logins right now"));
        // Prosody refuses a 'y' with malformed-request when it checks bindings: a
        // stripped offer, or one we cannot meet; not a malformed login of ours.
        let e = failure(&fail(C::MalformedRequest, None), false, true);
        assert!(matches!(e, SignalingError::LoginBinding(_)), "{e}");
        for (f, bound, words) in cases {
            let e = failure(&f, bound, false);
            assert!(e.is_permanent(), "{e}");
            let e = e.to_string();
            assert!(e.contains(words), "{:?} -> {e}", f.defined_condition);
            if words != "wrong username or password" {
                assert!(!e.contains("wrong username"), "{e}");
            }
        }
        let e = stream_failure(
            &StreamCondition::PolicyViolation,
            Some("Too many (3) failed authentications from this IP address (127.0.0.1). The address will be unblocked at 12:00 UTC".into()),
        );
        assert!(matches!(e, SignalingError::LoginRateLimited(_)), "{e}");
        let e = stream_failure(&StreamCondition::PolicyViolation, None);
        assert!(matches!(e, SignalingError::LoginPolicy(_)), "{e}");
        // Not a wrong password, and not worth repeating every few seconds.
        let e = stream_failure(&StreamCondition::NotAuthorized, None);
        assert!(matches!(e, SignalingError::LoginRefused(_)), "{e}");
        assert!(!stream_failure(&StreamCondition::SystemShutdown, None).is_permanent());
    }

    #[test]
    fn scram_server_errors_are_told_apart() {
        let refused = |w: &str| SignalingError::LoginRefused(w.into());
        for (value, bound, want) in [
            (
                "server-does-support-channel-binding",
                false,
                "tie this login",
            ),
            ("channel-bindings-dont-match", true, "tie this login"),
            ("invalid-proof", false, "wrong username or password"),
            ("unknown-user", false, "wrong username or password"),
            (
                "invalid-proof",
                true,
                "either the password is wrong or the binding",
            ),
            ("no-resources", false, "cannot reach"),
            (
                "extensions-not-supported",
                false,
                "refused the login: extensions",
            ),
        ] {
            let e = rebind(refused(value), bound);
            assert!(e.to_string().contains(want), "{value} -> {e}");
        }
    }
}
