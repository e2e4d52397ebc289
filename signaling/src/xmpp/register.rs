//! In-band registration and password change (XEP-0077), and a credential check run before
//! a session starts so that a wrong password becomes an error instead of a retry loop.

use super::classify::classify;
use super::connector::HushConnector;
use super::login::{self, LoginSecurity};
use super::stream::next_element;
use crate::SignalingError;
use futures::SinkExt;
use std::borrow::Cow;
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncWrite};
use tokio_xmpp::Stanza;
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::parsers::bind::BindQuery;
use tokio_xmpp::parsers::ibr::LegacyQuery;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::stanza_error::{DefinedCondition, StanzaError};
use tokio_xmpp::parsers::stream_features::StreamFeatures;
use tokio_xmpp::xmlstream::{
    FallibleStreamElement, StreamHeader, Timeouts, XmppStream, XmppStreamElement,
};

const REGISTER_ID: &str = "hush-register";
/// Upper bound for any single registration or login attempt.
const DEADLINE: Duration = Duration::from_secs(15);

fn timeouts() -> Timeouts {
    Timeouts {
        read_timeout: Duration::from_secs(10),
        response_timeout: Duration::from_secs(5),
    }
}

fn node(jid: &BareJid) -> Result<String, SignalingError> {
    jid.node()
        .map(|n| n.as_str().to_owned())
        .ok_or_else(|| SignalingError::InvalidInput(format!("{jid} has no user part")))
}

fn map_stanza_error(e: &StanzaError) -> SignalingError {
    let text = e.texts.values().next().cloned();
    match e.defined_condition {
        DefinedCondition::Conflict => SignalingError::UsernameTaken,
        DefinedCondition::NotAllowed
        | DefinedCondition::Forbidden
        | DefinedCondition::ServiceUnavailable => SignalingError::RegistrationNotAllowed,
        DefinedCondition::NotAuthorized => SignalingError::AuthFailed,
        ref other => SignalingError::Refused(text.unwrap_or_else(|| format!("{other:?}"))),
    }
}

/// Adds the presented certificate's fingerprint to a refusal, so the user can compare
/// it out of band and pin it.
fn explain(e: SignalingError, connector: &HushConnector) -> SignalingError {
    match (e, connector.presented_fingerprint()) {
        (SignalingError::UntrustedCertificate(r), Some(fp)) => {
            SignalingError::UntrustedCertificate(format!("{r}; the server presented SHA-256 {fp}"))
        }
        (other, _) => other,
    }
}

async fn within<T>(
    fut: impl std::future::Future<Output = Result<T, SignalingError>>,
) -> Result<T, SignalingError> {
    tokio::time::timeout(DEADLINE, fut)
        .await
        .map_err(|_| SignalingError::Timeout)?
}

/// Creates `jid` with `password` on its server (before any login).
pub async fn register_account(
    connector: &HushConnector,
    jid: &BareJid,
    password: &str,
) -> Result<(), SignalingError> {
    within(async {
        let username = node(jid)?;
        let target: Jid = jid.clone().into();
        let (pending, _) = connector
            .connect_tls(&target, ns::JABBER_CLIENT, timeouts())
            .await
            .map_err(classify)?;
        let (_features, mut stream) = pending
            .recv_features::<FallibleStreamElement>()
            .await
            .map_err(|e| classify(e.into()))?;
        let answer = exchange(
            &mut stream,
            password_iq(REGISTER_ID, username, password, jid),
        )
        .await;
        let _ = stream.shutdown().await;
        match answer? {
            Iq::Result { .. } => Ok(()),
            Iq::Error { error, .. } => Err(map_stanza_error(&error)),
            _ => Err(SignalingError::Protocol(
                "unexpected answer to registration".into(),
            )),
        }
    })
    .await
    .map_err(|e| explain(e, connector))
}

/// Logs in once (TLS + SASL, no session) to check the credentials. A wrong password is
/// [`SignalingError::AuthFailed`]; a distrusted certificate is
/// [`SignalingError::UntrustedCertificate`].
pub async fn verify_login(
    connector: &HushConnector,
    jid: &BareJid,
    password: &str,
) -> Result<(), SignalingError> {
    login_stream(connector, jid, password).await.map(|_| ())
}

/// An authenticated (not yet bound) stream, as the stanza stream needs it, and how the
/// login was made.
pub(crate) async fn login_stream(
    connector: &HushConnector,
    jid: &BareJid,
    password: &str,
) -> Result<
    (
        StreamFeatures,
        tokio_xmpp::stanzastream::XmppStream,
        LoginSecurity,
    ),
    SignalingError,
> {
    within(async {
        let username = node(jid)?;
        let target: Jid = jid.clone().into();
        let (pending, tls) = connector
            .connect_tls(&target, ns::JABBER_CLIENT, timeouts())
            .await
            .map_err(classify)?;
        let (features, stream) = pending
            .recv_features::<FallibleStreamElement>()
            .await
            .map_err(|e| classify(e.into()))?;
        let plan = login::plan(&features.sasl_mechanisms, features.sasl_cb.as_ref(), &tls)?;
        let offered_plus = features
            .sasl_mechanisms
            .iter()
            .any(|m| m.ends_with("-PLUS"));
        let (stream, security) =
            login::authenticate(stream, plan, offered_plus, &username, password).await?;
        let stream = stream
            .send_header(StreamHeader {
                to: Some(Cow::Owned(jid.domain().as_str().to_owned())),
                from: None,
                id: None,
            })
            .await
            .map_err(|e| classify(e.into()))?;
        let (features, stream) = stream
            .recv_features::<FallibleStreamElement>()
            .await
            .map_err(|e| classify(e.into()))?;
        Ok((features, stream.box_stream(), security))
    })
    .await
    .map_err(|e| explain(e, connector))
}

/// The XEP-0077 request that creates an account or sets its password.
fn password_iq(id: &str, username: String, password: &str, jid: &BareJid) -> Iq {
    let query = LegacyQuery {
        username: Some(username),
        password: Some(password.to_owned()),
        ..Default::default()
    };
    let domain: Jid = BareJid::from_parts(None, jid.domain()).into();
    Iq::from_set(id, query).with_to(domain)
}

/// Sends one IQ and waits for its answer (bounded by the caller's deadline).
async fn exchange<S: AsyncBufRead + AsyncWrite + Unpin>(
    stream: &mut XmppStream<S>,
    iq: Iq,
) -> Result<Iq, SignalingError> {
    let id = iq.id().to_owned();
    stream
        .send(&XmppStreamElement::Stanza(Stanza::Iq(iq)))
        .await
        .map_err(|e| classify(e.into()))?;
    loop {
        if let XmppStreamElement::Stanza(Stanza::Iq(answer)) =
            next_element(stream).await.map_err(classify)?
            && answer.id() == id
        {
            return Ok(answer);
        }
    }
}

/// Binds a resource: the step where a server's access rules refuse an account a session
/// even though its password was right.
async fn bind(stream: &mut tokio_xmpp::stanzastream::XmppStream) -> Result<(), SignalingError> {
    match exchange(stream, Iq::from_set("hush-bind", BindQuery::new(None))).await? {
        Iq::Result { .. } => Ok(()),
        Iq::Error { error, .. } => {
            let text = error
                .texts
                .values()
                .next()
                .map(|t| super::scram::printable(t))
                .unwrap_or_else(|| format!("{:?}", error.defined_condition));
            Err(match error.defined_condition {
                DefinedCondition::NotAllowed | DefinedCondition::Forbidden => {
                    SignalingError::LoginPolicy(format!("no session for this account: {text}"))
                }
                _ => SignalingError::Protocol(format!("the server refused a session: {text}")),
            })
        }
        _ => Err(SignalingError::Protocol(
            "unexpected answer to the session request".into(),
        )),
    }
}

/// Logs in and opens a session on a connection of its own, then leaves: run when the
/// last session never came online, to learn whether the server refuses this account one
/// (the stanza stream would only say the connection was lost, and retry forever).
pub(crate) async fn check_session(
    connector: &HushConnector,
    jid: &BareJid,
    password: &str,
) -> Result<(), SignalingError> {
    let (_, mut stream, _) = login_stream(connector, jid, password).await?;
    let outcome = within(bind(&mut stream)).await;
    let _ = stream.shutdown().await;
    outcome
}

/// Changes the account password on the server (XEP-0077 §3.3): log in with the old one,
/// bind a resource, ask, and end the session.
pub async fn change_password(
    connector: &HushConnector,
    jid: &BareJid,
    old_password: &str,
    new_password: &str,
) -> Result<(), SignalingError> {
    let username = node(jid)?;
    let (_, mut stream, _) = login_stream(connector, jid, old_password).await?;
    let outcome = within(async {
        bind(&mut stream).await?;
        match exchange(
            &mut stream,
            password_iq(REGISTER_ID, username, new_password, jid),
        )
        .await?
        {
            Iq::Result { .. } => Ok(()),
            // The old password has just logged in: a refusal here is not about it
            // (XEP-0077 §3.3: e.g. the connection is not secure enough for the server).
            Iq::Error { error, .. }
                if error.defined_condition == DefinedCondition::NotAuthorized =>
            {
                Err(SignalingError::Refused(
                    error
                        .texts
                        .values()
                        .next()
                        .map(|t| super::scram::printable(t))
                        .unwrap_or_else(|| "not authorized to change the password here".into()),
                ))
            }
            Iq::Error { error, .. } => Err(map_stanza_error(&error)),
            _ => Err(SignalingError::Protocol(
                "unexpected answer to the password change".into(),
            )),
        }
    })
    .await;
    let _ = stream.shutdown().await;
    outcome
}
