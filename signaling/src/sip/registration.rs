//! Registration at a registrar with digest authentication, refreshed before expiry,
//! withdrawn (Expires: 0) when stopped. A refusal of the credentials stops the loop;
//! network trouble is retried with backoff. The realm the registrar accepted our answer
//! for becomes the account's realm: the only one calls answer challenges for.

use super::digest::{self, Challenged};
use super::realm::{AccountRealms, withheld_words};
use super::stack::{SipStack, Transport};
use crate::SignalingError;
use rsipstack::dialog::authenticate::Credential;
use rsipstack::dialog::registration::Registration;
use rsipstack::sip::Header;
use rsipstack::sip::Uri;
use rsipstack::sip::typed::Contact;
use rsipstack::transport::SipAddr;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Where a registration stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationState {
    /// Sending REGISTER.
    Registering,
    /// The registrar accepted us for this many seconds.
    Registered {
        /// Granted expiry.
        expires: u32,
    },
    /// The registrar refused (wrong password, unknown user): stopped until fixed.
    Refused(String),
    /// Temporary trouble; retrying.
    Retrying(String),
    /// Withdrawn (Expires: 0 sent) or stopped.
    Unregistered,
}

/// A running registration. Dropping it stops the refresh without unregistering; call
/// [`RegistrationHandle::unregister`] for a clean exit.
pub struct RegistrationHandle {
    state: watch::Receiver<RegistrationState>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RegistrationHandle {
    /// Watches the state.
    pub fn state(&self) -> watch::Receiver<RegistrationState> {
        self.state.clone()
    }

    /// Waits (bounded) until registered or refused.
    pub async fn wait_settled(&mut self, limit: Duration) -> RegistrationState {
        let settled = |s: &RegistrationState| {
            matches!(
                s,
                RegistrationState::Registered { .. } | RegistrationState::Refused(_)
            )
        };
        let _ = tokio::time::timeout(limit, self.state.wait_for(settled)).await;
        self.state.borrow().clone()
    }

    /// Sends REGISTER with Expires: 0 and stops.
    pub async fn unregister(mut self) -> RegistrationState {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        self.state.borrow().clone()
    }
}

impl Drop for RegistrationHandle {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

const REQUESTED_EXPIRES: u32 = 600;

/// How long a REGISTER may go unanswered before the user is told (and we retry). SIP's
/// own transaction timeout is 32 s, too long to leave someone looking at "registering".
const ANSWER_WITHIN: Duration = Duration::from_secs(8);

/// Over TCP or TLS the registrar reaches us on the connection we opened: register
/// that connection's address with `;transport=` so the server sends calls back over it
/// (a new connection after a drop gets a new address, hence before every REGISTER).
/// The same Contact goes into `dialogs`, for the stack's calls.
async fn stream_contact(
    endpoint: &rsipstack::transaction::endpoint::EndpointInnerRef,
    registrar: &Uri,
    transport: rsipstack::sip::Transport,
    user: &str,
    reg: &mut Registration,
    dialogs: &std::sync::Mutex<Option<Uri>>,
) -> Result<(), String> {
    let target = SipAddr::try_from(registrar).map_err(|e| e.to_string())?;
    let (conn, _) = tokio::time::timeout(
        Duration::from_secs(10),
        endpoint.transport_layer.lookup(&target, None),
    )
    .await
    .map_err(|_| "connection timed out".to_owned())?
    .map_err(|e| e.to_string())?;
    let uri = Uri {
        scheme: Some(rsipstack::sip::Scheme::Sip),
        auth: Some(rsipstack::sip::Auth {
            user: user.to_owned(),
            password: None,
        }),
        host_with_port: conn.get_addr().addr.clone(),
        params: vec![rsipstack::sip::Param::Transport(transport)],
        headers: vec![],
    };
    if let Ok(mut d) = dialogs.lock() {
        *d = Some(uri.clone());
    }
    reg.contact = Some(Contact {
        display_name: None,
        uri,
        params: vec![],
    });
    Ok(())
}

/// How a REGISTER ended.
enum Registered {
    /// The registrar's final word, and the realm we answered a challenge for, if any.
    Response(rsipstack::sip::Response, Option<String>),
    /// The registrar asked for a realm that is not the account's: nothing was sent.
    Withheld(String),
}

/// One REGISTER, answering the registrar's digest challenge (401 or 407) with the
/// strongest algorithm offered, for the account's realm only (`realms`); a second
/// challenge after our answer, unless only the nonce went stale, is returned as the
/// final word (wrong credentials).
async fn answered_register(
    reg: &mut Registration,
    registrar: &Uri,
    expires: u32,
    cred: &Credential,
    realms: &AccountRealms,
) -> rsipstack::Result<Registered> {
    reg.extra_headers.retain(|h| !digest::is_authorization(h));
    let mut resp = reg.register(registrar.clone(), Some(expires)).await?;
    let mut answered = 0;
    let mut realm = None;
    let uri = registrar.to_string();
    let permitted = |r: &str| realms.permits_registrar(r, cred.realm.as_deref());
    loop {
        match digest::authorization(&resp, cred, "REGISTER", &uri, answered, permitted) {
            Challenged::Answer { header, realm: r } => {
                reg.extra_headers.retain(|h| !digest::is_authorization(h));
                reg.extra_headers.push(header);
                realm = Some(r);
                answered += 1;
                resp = reg.register(registrar.clone(), Some(expires)).await?;
            }
            Challenged::Unanswerable => break,
            Challenged::Withheld(r) => {
                reg.extra_headers.retain(|h| !digest::is_authorization(h));
                return Ok(Registered::Withheld(r));
            }
        }
    }
    reg.extra_headers.retain(|h| !digest::is_authorization(h));
    Ok(Registered::Response(resp, realm))
}

impl SipStack {
    /// Starts registering `user@registrar-host` (the credential's user) at `registrar`
    /// and keeps it fresh.
    pub fn register(&self, registrar: Uri, credential: Credential) -> RegistrationHandle {
        let mut aor = registrar.clone();
        aor.params.clear();
        aor.auth = Some(rsipstack::sip::Auth {
            user: credential.username.clone(),
            password: None,
        });
        self.register_aor(registrar, aor, credential)
    }

    /// Starts registering our contact for the address of record `aor` at `registrar`
    /// and keeps it fresh. Calls the registrar relays to us come from its address, so
    /// the per-source limit on ringing calls does not apply to it.
    pub fn register_aor(
        &self,
        registrar: Uri,
        aor: Uri,
        credential: Credential,
    ) -> RegistrationHandle {
        self.trust_server(&registrar);
        let (tx, rx) = watch::channel(RegistrationState::Registering);
        let stop = CancellationToken::new();
        let endpoint = self.endpoint_inner();
        let token = stop.clone();
        let registrar = self.with_transport(&registrar);
        let stream = match self.transport() {
            Transport::Udp => None,
            Transport::Tcp => Some(rsipstack::sip::Transport::Tcp),
            Transport::Tls => Some(rsipstack::sip::Transport::Tls),
        };
        let user = self.user().to_owned();
        let dialogs = self.stream_contact_slot();
        let realms = self.realms();
        let task = tokio::spawn(async move {
            // Challenges are answered by `answered_register`, not by rsipstack; without
            // a credential rsipstack leaves the user out of From and To, so we set them.
            let mut reg = Registration::new(endpoint.clone(), None);
            let tag = digest::cnonce();
            reg.extra_headers = vec![
                Header::From(format!("<{aor}>;tag={}", &tag[..10]).into()),
                Header::To(format!("<{aor}>").into()),
            ];
            let mut failures = 0u32;
            let mut registered = false;
            loop {
                let outcome = match stream {
                    None => Ok(()),
                    Some(t) => tokio::select! {
                        _ = token.cancelled() => break,
                        r = stream_contact(&endpoint, &registrar, t, &user, &mut reg, &dialogs) => r,
                    },
                };
                let outcome = match outcome {
                    Err(e) => Err(e),
                    Ok(()) => tokio::select! {
                        _ = token.cancelled() => break,
                        r = tokio::time::timeout(
                            ANSWER_WITHIN,
                            answered_register(&mut reg, &registrar, REQUESTED_EXPIRES, &credential, &realms),
                        ) => match r {
                            Ok(r) => r.map_err(|e| e.to_string()),
                            Err(_) => Err(format!(
                                "no answer within {} s",
                                ANSWER_WITHIN.as_secs()
                            )),
                        }
                    },
                };
                let wait = match outcome {
                    Ok(Registered::Withheld(realm)) => {
                        tracing::warn!(realm = %super::realm::shown(&realm), "not sending the password to a foreign realm");
                        let why = withheld_words(
                            "the registrar",
                            &realm,
                            &realms.known(credential.realm.as_deref()),
                        );
                        let _ = tx.send(RegistrationState::Refused(why));
                        registered = false;
                        token.cancelled().await;
                        break;
                    }
                    Ok(Registered::Response(resp, realm))
                        if resp.status_code.kind()
                            == rsipstack::sip::StatusCodeKind::Successful =>
                    {
                        if let Some(realm) = realm {
                            realms.learn(&realm);
                        }
                        failures = 0;
                        registered = true;
                        let expires = reg.expires().max(30);
                        let _ = tx.send(RegistrationState::Registered { expires });
                        rsipstack::dialog::registration::refresh_interval(expires)
                    }
                    Ok(Registered::Response(resp, _))
                        if matches!(resp.status_code.code(), 401 | 403 | 404 | 407) =>
                    {
                        let why = match resp.status_code.code() {
                            404 => "unknown user at this registrar".to_owned(),
                            _ => SignalingError::AuthFailed.to_string(),
                        };
                        let _ = tx.send(RegistrationState::Refused(why));
                        registered = false;
                        token.cancelled().await;
                        break;
                    }
                    Ok(Registered::Response(resp, _)) => {
                        failures += 1;
                        let _ = tx.send(RegistrationState::Retrying(format!(
                            "registrar answered {}",
                            resp.status_code
                        )));
                        rsipstack::dialog::registration::backoff_interval(failures)
                    }
                    Err(e) => {
                        failures += 1;
                        let _ = tx.send(RegistrationState::Retrying(format!(
                            "cannot reach the registrar: {e}"
                        )));
                        rsipstack::dialog::registration::backoff_interval(failures)
                    }
                };
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            if registered {
                let _ = tokio::time::timeout(
                    Duration::from_secs(5),
                    answered_register(&mut reg, &registrar, 0, &credential, &realms),
                )
                .await;
            }
            let _ = tx.send(RegistrationState::Unregistered);
        });
        RegistrationHandle {
            state: rx,
            stop,
            task: Some(task),
        }
    }
}
