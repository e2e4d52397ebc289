//! The ZID cache in the call layer: libbzrtp's retained secrets and "SAS verified" flags
//! live in memory ([`ZidStore`]), restored from the vault when it opens and sealed back
//! into it after every change; verification outside a call names one key (ZID).

use crate::error::{CoreError, Result};
use crate::profile::Profile;
use crate::security::PeerKey;
use hush_media::zrtp::{CachedKey, ZidStore};
use std::sync::Arc;
use tokio::sync::Notify;

/// Where the call layer's ZID cache stands.
pub(crate) enum ZidState {
    /// The vault is locked: no call can be keyed until the master password is given.
    Locked,
    /// Open; `saved` is the store generation last sealed into the vault.
    Ready { store: ZidStore, saved: u64 },
    /// The vault's copy could not be read; calls say why.
    Unavailable(String),
}

impl ZidState {
    /// Opens the cache from an unlocked profile (moving a plaintext cache of an earlier
    /// version into the vault first). Every later change pings `changed`.
    pub(crate) fn open(profile: &mut Profile, changed: &Arc<Notify>) -> ZidState {
        if profile.is_locked() {
            return ZidState::Locked;
        }
        let image = match profile.zrtp_cache() {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the ZRTP key cache from the vault");
                return ZidState::Unavailable(e.to_string());
            }
        };
        match ZidStore::open(image.as_deref().map(|i| &i[..])) {
            Ok(store) => {
                let changed = changed.clone();
                store.on_change(move || changed.notify_one());
                ZidState::Ready { store, saved: 0 }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot open the ZRTP key cache");
                ZidState::Unavailable(e.to_string())
            }
        }
    }

    /// The store, or why calls cannot be keyed now.
    pub(crate) fn store(&self) -> Result<&ZidStore> {
        match self {
            ZidState::Ready { store, .. } => Ok(store),
            ZidState::Locked => Err(CoreError::Locked),
            ZidState::Unavailable(why) => Err(CoreError::Call(format!(
                "calls cannot be encrypted: the ZRTP key cache in the vault cannot be read ({why})"
            ))),
        }
    }

    /// The store and its generation if it changed since it was last sealed.
    pub(crate) fn unsaved(&self) -> Option<(ZidStore, u64)> {
        match self {
            ZidState::Ready { store, saved } if store.generation() > *saved => {
                Some((store.clone(), store.generation()))
            }
            _ => None,
        }
    }

    /// Records that everything up to `generation` is sealed in the vault.
    pub(crate) fn saved(&mut self, generation: u64) {
        if let ZidState::Ready { saved, .. } = self {
            *saved = (*saved).max(generation);
        }
    }
}

pub(crate) fn peer_key(k: CachedKey) -> PeerKey {
    PeerKey {
        peer: k.peer_uri,
        key: k.zid.to_string(),
        verified: k.verified,
        last_seen: k.last_seen,
    }
}
