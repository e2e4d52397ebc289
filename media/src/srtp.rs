//! SRTP/SRTCP for one media stream, keyed from ZRTP, with replay protection on in both
//! directions. Inbound state is kept for a handful of sources only, so a flood of
//! packets with random SSRCs cannot grow memory.

use crate::MediaError;
use crate::zrtp::{SrtpKeys, SrtpProfile};
use bytes::Bytes;
use webrtc_srtp::context::Context;
use webrtc_srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use webrtc_srtp::protection_profile::ProtectionProfile;

/// Replay window in packets (RFC 3711 recommends at least 64).
const REPLAY_WINDOW: usize = 128;
/// Distinct remote sources we keep cryptographic state for.
const MAX_REMOTE_SOURCES: usize = 4;

fn profile(p: SrtpProfile) -> ProtectionProfile {
    match p {
        SrtpProfile::Aes128CmHmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
        SrtpProfile::Aes128CmHmacSha1_32 => ProtectionProfile::Aes128CmHmacSha1_32,
        SrtpProfile::Aes256CmHmacSha1_80 => ProtectionProfile::Aes256CmHmacSha1_80,
        SrtpProfile::Aes256CmHmacSha1_32 => ProtectionProfile::Aes256CmHmacSha1_32,
        SrtpProfile::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
    }
}

/// Encrypts what we send and authenticates and decrypts what we receive.
pub struct SrtpSession {
    tx: Context,
    rx: Context,
    /// Sources with inbound state; `authenticated` ones have sent a valid packet.
    remote_sources: Vec<u32>,
    authenticated: Vec<u32>,
    /// Kept to rebuild the inbound context if junk fills it before the peer speaks.
    remote_key: zeroize::Zeroizing<Vec<u8>>,
    remote_salt: zeroize::Zeroizing<Vec<u8>>,
    profile: ProtectionProfile,
}

fn context(p: ProtectionProfile, key: &[u8], salt: &[u8]) -> Result<Context, MediaError> {
    Context::new(
        key,
        salt,
        p,
        Some(srtp_replay_protection(REPLAY_WINDOW)),
        Some(srtcp_replay_protection(REPLAY_WINDOW)),
    )
    .map_err(|e| MediaError::InvalidInput(format!("SRTP key setup: {e}")))
}

impl SrtpSession {
    /// Sets up both directions from the keys a ZRTP handshake produced.
    pub fn new(keys: &SrtpKeys) -> Result<SrtpSession, MediaError> {
        let p = profile(keys.profile);
        Ok(SrtpSession {
            tx: context(p, &keys.local_key, &keys.local_salt)?,
            rx: context(p, &keys.remote_key, &keys.remote_salt)?,
            remote_sources: Vec::with_capacity(MAX_REMOTE_SOURCES),
            authenticated: Vec::with_capacity(MAX_REMOTE_SOURCES),
            remote_key: keys.remote_key.clone(),
            remote_salt: keys.remote_salt.clone(),
            profile: p,
        })
    }

    /// Protects an outgoing RTP packet.
    pub fn protect_rtp(&mut self, packet: &[u8]) -> Result<Bytes, MediaError> {
        self.tx
            .encrypt_rtp(packet)
            .map_err(|e| MediaError::InvalidInput(format!("SRTP protect: {e}")))
    }

    /// Protects an outgoing RTCP packet.
    pub fn protect_rtcp(&mut self, packet: &[u8]) -> Result<Bytes, MediaError> {
        self.tx
            .encrypt_rtcp(packet)
            .map_err(|e| MediaError::InvalidInput(format!("SRTCP protect: {e}")))
    }

    fn admit(&mut self, ssrc: u32) -> Result<(), MediaError> {
        if self.remote_sources.contains(&ssrc) {
            return Ok(());
        }
        if self.remote_sources.len() >= MAX_REMOTE_SOURCES {
            if !self.authenticated.is_empty() {
                return Err(MediaError::Malformed {
                    kind: "SRTP",
                    reason: "too many remote sources",
                });
            }
            // Only forgeries so far: start the inbound state afresh.
            self.rx = context(self.profile, &self.remote_key, &self.remote_salt)?;
            self.remote_sources.clear();
        }
        self.remote_sources.push(ssrc);
        Ok(())
    }

    fn authenticated(&mut self, ssrc: u32) {
        if !self.authenticated.contains(&ssrc) {
            self.authenticated.push(ssrc);
        }
    }

    /// Authenticates and decrypts an incoming SRTP packet. Forged, replayed or damaged
    /// packets are refused.
    pub fn unprotect_rtp(&mut self, packet: &[u8]) -> Result<Bytes, MediaError> {
        if packet.len() < 12 {
            return Err(MediaError::Malformed {
                kind: "SRTP",
                reason: "too short",
            });
        }
        let ssrc = u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]);
        self.admit(ssrc)?;
        let plain = self
            .rx
            .decrypt_rtp(packet)
            .map_err(|_| MediaError::Malformed {
                kind: "SRTP",
                reason: "authentication or replay check failed",
            })?;
        self.authenticated(ssrc);
        Ok(plain)
    }

    /// Authenticates and decrypts an incoming SRTCP packet.
    pub fn unprotect_rtcp(&mut self, packet: &[u8]) -> Result<Bytes, MediaError> {
        if packet.len() < 8 {
            return Err(MediaError::Malformed {
                kind: "SRTCP",
                reason: "too short",
            });
        }
        let ssrc = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
        self.admit(ssrc)?;
        let plain = self
            .rx
            .decrypt_rtcp(packet)
            .map_err(|_| MediaError::Malformed {
                kind: "SRTCP",
                reason: "authentication or replay check failed",
            })?;
        self.authenticated(ssrc);
        Ok(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::{RtpHeader, write};
    use zeroize::Zeroizing;

    fn keys(a: u8, b: u8, profile: SrtpProfile) -> SrtpKeys {
        let n = profile.key_len();
        SrtpKeys {
            profile,
            local_key: Zeroizing::new(vec![a; n]),
            local_salt: Zeroizing::new(vec![a; 14]),
            remote_key: Zeroizing::new(vec![b; n]),
            remote_salt: Zeroizing::new(vec![b; 14]),
        }
    }

    #[test]
    fn protect_unprotect_replay_and_forgery() {
        for p in [
            SrtpProfile::Aes128CmHmacSha1_80,
            SrtpProfile::Aes128CmHmacSha1_32,
            SrtpProfile::Aes256CmHmacSha1_80,
        ] {
            let mut alice = SrtpSession::new(&keys(1, 2, p)).expect("alice");
            let mut bob = SrtpSession::new(&keys(2, 1, p)).expect("bob");
            let mut plain = Vec::new();
            write(
                &RtpHeader {
                    payload_type: 0,
                    marker: false,
                    sequence: 1,
                    timestamp: 160,
                    ssrc: 77,
                },
                b"hello audio",
                &mut plain,
            );
            let sealed = alice.protect_rtp(&plain).expect("protect");
            assert!(
                !sealed.windows(11).any(|w| w == b"hello audio"),
                "payload is encrypted"
            );
            assert_eq!(
                &bob.unprotect_rtp(&sealed).expect("unprotect")[..],
                &plain[..]
            );
            assert!(bob.unprotect_rtp(&sealed).is_err(), "replay refused");
            let mut forged = alice.protect_rtp(&plain).expect("protect").to_vec();
            forged[2..4].copy_from_slice(&2u16.to_be_bytes()); // new sequence, same body
            let mid = forged.len() / 2;
            forged[mid] ^= 1;
            assert!(
                bob.unprotect_rtp(&forged).is_err(),
                "tampered packet refused"
            );
            assert!(
                alice.unprotect_rtp(&sealed).is_err(),
                "own packets do not authenticate"
            );
        }
    }

    #[test]
    fn random_sources_do_not_grow_state() {
        let mut bob = SrtpSession::new(&keys(2, 1, SrtpProfile::Aes128CmHmacSha1_80)).expect("bob");
        let mut junk = vec![0x80u8, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        junk.extend_from_slice(&[0u8; 30]);
        for ssrc in 0u32..1000 {
            junk[8..12].copy_from_slice(&ssrc.to_be_bytes());
            assert!(bob.unprotect_rtp(&junk).is_err());
        }
        assert!(bob.remote_sources.len() <= MAX_REMOTE_SOURCES);
        // The real peer still gets through after the flood.
        let mut alice =
            SrtpSession::new(&keys(1, 2, SrtpProfile::Aes128CmHmacSha1_80)).expect("alice");
        let mut plain = Vec::new();
        write(
            &RtpHeader {
                payload_type: 0,
                marker: false,
                sequence: 9,
                timestamp: 0,
                ssrc: 5555,
            },
            b"x",
            &mut plain,
        );
        let sealed = alice.protect_rtp(&plain).expect("protect");
        assert!(
            bob.unprotect_rtp(&sealed).is_ok(),
            "legitimate source admitted after junk"
        );
    }
}
