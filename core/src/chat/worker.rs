//! The OTR engine's own thread: libotr is not thread-safe, so one thread owns the user
//! state and makes every call on it. Each request comes back with what it produced —
//! messages for the transport, events, and where the touched conversations now stand —
//! so the caller can tie them to what the user did.

use hush_signaling::otr::{API_VERSION, ChatSecurity, OtrEngine, OtrError, OtrEvent, Transmit};
use std::sync::mpsc as std_mpsc;
use tokio::sync::oneshot;

/// Where one conversation stands after a call.
#[derive(Debug, Clone)]
pub(crate) struct PeerState {
    pub(crate) account: String,
    pub(crate) peer: String,
    pub(crate) state: ChatSecurity,
    pub(crate) fingerprint: Option<String>,
    pub(crate) held: usize,
    /// The user knows this buddy (OTR's word: engaged, verified, or in the file).
    pub(crate) known: bool,
}

/// What a call produced besides its result.
#[derive(Debug, Default)]
pub(crate) struct Produced {
    pub(crate) transmits: Vec<Transmit>,
    pub(crate) events: Vec<OtrEvent>,
    pub(crate) states: Vec<PeerState>,
}

type Job = Box<dyn FnOnce(&mut OtrEngine) + Send>;

/// Handle to the OTR thread; the thread ends when the handle is dropped.
pub(crate) struct OtrWorker {
    jobs: std_mpsc::Sender<Job>,
    /// Why there is no engine (libotr or its thread did not start).
    unavailable: Option<OtrError>,
}

fn event_peer(e: &OtrEvent) -> Option<(&str, &str)> {
    match e {
        OtrEvent::Secure { account, peer, .. }
        | OtrEvent::Insecure { account, peer }
        | OtrEvent::Finished { account, peer }
        | OtrEvent::NewFingerprint { account, peer, .. }
        | OtrEvent::Smp { account, peer, .. }
        | OtrEvent::Notice { account, peer, .. }
        | OtrEvent::NotSent { account, peer, .. } => {
            (!peer.is_empty()).then_some((account.as_str(), peer.as_str()))
        }
        OtrEvent::FingerprintsChanged => None,
    }
}

fn drain(engine: &mut OtrEngine, primary: Option<(String, String)>) -> Produced {
    let mut p = Produced::default();
    while let Some(t) = engine.poll_transmit() {
        p.transmits.push(t);
    }
    while let Some(e) = engine.poll_event() {
        p.events.push(e);
    }
    let mut peers: Vec<(String, String)> = primary.into_iter().collect();
    for e in &p.events {
        if let Some((a, b)) = event_peer(e)
            && !peers.iter().any(|(x, y)| x == a && y == b)
        {
            peers.push((a.to_owned(), b.to_owned()));
        }
    }
    p.states = peers
        .into_iter()
        .map(|(account, peer)| PeerState {
            state: engine.state(&account, &peer),
            fingerprint: engine.peer_fingerprint(&account, &peer),
            held: engine.held(&account, &peer),
            known: engine.is_known(&account, &peer),
            account,
            peer,
        })
        .collect();
    p
}

impl OtrWorker {
    /// Starts the thread with an empty user state (fragments at `max_size` bytes).
    pub(crate) fn start(max_size: usize) -> OtrWorker {
        Self::start_for(max_size, API_VERSION)
    }

    /// As [`OtrWorker::start`], starting libotr for API `version` (others than
    /// [`API_VERSION`] prove that a library that does not start means no chat).
    pub(crate) fn start_for(max_size: usize, version: (u32, u32, u32)) -> OtrWorker {
        let (tx, rx) = std_mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = std_mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("hush-otr".into())
            .spawn(move || {
                let mut engine = match OtrEngine::for_api_version(version) {
                    Ok(engine) => {
                        let _ = ready_tx.send(Ok(()));
                        engine
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                engine.set_max_message_size(max_size);
                while let Ok(job) = rx.recv() {
                    job(&mut engine);
                }
            });
        let unavailable = match spawned {
            Err(e) => Some(OtrError::Unavailable(format!(
                "its thread did not start: {e}"
            ))),
            // Creating the engine takes microseconds: wait for the verdict.
            Ok(_) => match ready_rx.recv() {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(_) => Some(OtrError::Unavailable("its thread stopped".into())),
            },
        };
        if let Some(e) = &unavailable {
            tracing::error!(error = %e, "private chat is unavailable; chat is off");
        }
        OtrWorker {
            jobs: tx,
            unavailable,
        }
    }

    /// Why OTR is unavailable, if it is.
    pub(crate) fn unavailable(&self) -> Option<&OtrError> {
        self.unavailable.as_ref()
    }

    /// Runs `f` on the OTR thread and returns its result with what it produced; the
    /// state of `primary` (account, peer) is always reported. `None` if the thread died.
    pub(crate) async fn call<T: Send + 'static>(
        &self,
        primary: Option<(&str, &str)>,
        f: impl FnOnce(&mut OtrEngine) -> T + Send + 'static,
    ) -> Option<(T, Produced)> {
        let primary = primary.map(|(a, p)| (a.to_owned(), p.to_owned()));
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |engine| {
            let out = f(engine);
            let produced = drain(engine, primary);
            let _ = tx.send((out, produced));
        });
        self.jobs.send(job).ok()?;
        rx.await.ok()
    }
}
