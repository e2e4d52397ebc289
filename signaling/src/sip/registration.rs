//! Registration at a registrar with digest authentication, refreshed before expiry,
//! withdrawn (Expires: 0) when stopped. A refusal of the credentials stops the loop;
//! network trouble is retried with backoff.

use super::stack::{SipStack, Transport};
use crate::SignalingError;
use rsipstack::dialog::authenticate::Credential;
use rsipstack::dialog::registration::Registration;
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

/// Over TCP or TLS the registrar reaches us on the connection we opened: register
/// that connection's address with `;transport=` so the server sends calls back over it
/// (a new connection after a drop gets a new address, hence before every REGISTER).
async fn stream_contact(
    endpoint: &rsipstack::transaction::endpoint::EndpointInnerRef,
    registrar: &Uri,
    transport: rsipstack::sip::Transport,
    user: &str,
    reg: &mut Registration,
) -> Result<(), String> {
    let target = SipAddr::try_from(registrar).map_err(|e| e.to_string())?;
    let (conn, _) = tokio::time::timeout(
        Duration::from_secs(10),
        endpoint.transport_layer.lookup(&target, None),
    )
    .await
    .map_err(|_| "connection timed out".to_owned())?
    .map_err(|e| e.to_string())?;
    let local = conn.get_addr().addr.clone();
    reg.contact = Some(Contact {
        display_name: None,
        uri: Uri {
            scheme: Some(rsipstack::sip::Scheme::Sip),
            auth: Some(rsipstack::sip::Auth {
                user: user.to_owned(),
                password: None,
            }),
            host_with_port: local,
            params: vec![rsipstack::sip::Param::Transport(transport)],
            headers: vec![],
        },
        params: vec![],
    });
    Ok(())
}

impl SipStack {
    /// Starts registering `aor`'s contact at `registrar` and keeps it fresh.
    pub fn register(&self, registrar: Uri, credential: Credential) -> RegistrationHandle {
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
        let contact_slot = {
            let slot = self.stream_contact_slot();
            move |uri: Uri| {
                if let Ok(mut c) = slot.lock() {
                    *c = Some(uri);
                }
            }
        };
        let task = tokio::spawn(async move {
            let mut reg = Registration::new(endpoint.clone(), Some(credential));
            let mut failures = 0u32;
            let mut registered = false;
            loop {
                let outcome = match stream {
                    None => Ok(()),
                    Some(t) => tokio::select! {
                        _ = token.cancelled() => break,
                        r = stream_contact(&endpoint, &registrar, t, &user, &mut reg) => {
                            if let Some(c) = &reg.contact {
                                contact_slot(c.uri.clone());
                            }
                            r
                        }
                    },
                };
                let outcome = match outcome {
                    Err(e) => Err(e),
                    Ok(()) => tokio::select! {
                        _ = token.cancelled() => break,
                        r = reg.register(registrar.clone(), Some(REQUESTED_EXPIRES)) => {
                            r.map_err(|e| e.to_string())
                        }
                    },
                };
                let wait = match outcome {
                    Ok(resp)
                        if resp.status_code.kind()
                            == rsipstack::sip::StatusCodeKind::Successful =>
                    {
                        failures = 0;
                        registered = true;
                        let expires = reg.expires().max(30);
                        let _ = tx.send(RegistrationState::Registered { expires });
                        rsipstack::dialog::registration::refresh_interval(expires)
                    }
                    Ok(resp) if matches!(resp.status_code.code(), 401 | 403 | 404 | 407) => {
                        let why = match resp.status_code.code() {
                            404 => "unknown user at this registrar".to_owned(),
                            _ => SignalingError::AuthFailed.to_string(),
                        };
                        let _ = tx.send(RegistrationState::Refused(why));
                        registered = false;
                        token.cancelled().await;
                        break;
                    }
                    Ok(resp) => {
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
                    reg.register(registrar.clone(), Some(0)),
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
