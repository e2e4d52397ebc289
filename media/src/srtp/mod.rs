//! SRTP/SRTCP for one media stream, keyed from ZRTP, with replay protection on in both
//! directions. Inbound state is kept for a handful of sources only, so a flood of
//! packets with random SSRCs cannot grow memory.

mod cm;
mod gcm;
mod kdf;
mod stream;

use crate::MediaError;
use crate::zrtp::{SrtpKeys, SrtpProfile};
use bytes::Bytes;
use cm::CmKeys;
use gcm::GcmKeys;
use stream::SrtpStream;
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

/// Outbound and inbound RTP protection for the negotiated profile.
enum RtpPath {
    Cm(Box<(SrtpStream<CmKeys>, SrtpStream<CmKeys>)>),
    Gcm(Box<(SrtpStream<GcmKeys>, SrtpStream<GcmKeys>)>),
}

/// Encrypts what we send and authenticates and decrypts what we receive.
pub struct SrtpSession {
    /// SRTCP, and SRTP for the AEAD profile.
    tx: Context,
    rx: Context,
    /// SRTP (RTP): our own path, faster than webrtc-srtp's.
    rtp: RtpPath,
    /// Sources with inbound state; `authenticated` ones have sent a valid packet.
    remote_sources: Vec<u32>,
    authenticated: Vec<u32>,
    /// Kept to rebuild the inbound context if junk fills it before the peer speaks.
    remote_key: zeroize::Zeroizing<Vec<u8>>,
    remote_salt: zeroize::Zeroizing<Vec<u8>>,
    profile: ProtectionProfile,
    /// Shortest SRTCP packet possible for the profile: header and SSRC, the E+index
    /// word and the tag. webrtc-srtp underflows (and panics) on anything shorter.
    srtcp_min: usize,
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
        let tag_len = match keys.profile {
            SrtpProfile::Aes128CmHmacSha1_80 | SrtpProfile::Aes256CmHmacSha1_80 => Some(10),
            SrtpProfile::Aes128CmHmacSha1_32 | SrtpProfile::Aes256CmHmacSha1_32 => Some(4),
            SrtpProfile::AeadAes128Gcm => None,
        };
        let rtp = match tag_len {
            Some(t) => RtpPath::Cm(Box::new((
                SrtpStream::new(CmKeys::new(&keys.local_key, &keys.local_salt, t)?),
                SrtpStream::new(CmKeys::new(&keys.remote_key, &keys.remote_salt, t)?),
            ))),
            None => RtpPath::Gcm(Box::new((
                SrtpStream::new(GcmKeys::new(&keys.local_key, &keys.local_salt)?),
                SrtpStream::new(GcmKeys::new(&keys.remote_key, &keys.remote_salt)?),
            ))),
        };
        let srtcp_tag = if keys.profile == SrtpProfile::AeadAes128Gcm {
            16
        } else {
            10 // SRTCP keeps the 80-bit tag even with the _32 profiles (RFC 3711 §5.2)
        };
        Ok(SrtpSession {
            srtcp_min: 8 + 4 + srtcp_tag,
            rtp,
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
        match &mut self.rtp {
            RtpPath::Cm(c) => c.0.protect(packet),
            RtpPath::Gcm(g) => g.0.protect(packet),
        }
        .map(Bytes::from)
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
        // Each stream keeps its own bounded per-source state, made only by authentic
        // packets.
        match &mut self.rtp {
            RtpPath::Cm(c) => c.1.unprotect(packet),
            RtpPath::Gcm(g) => g.1.unprotect(packet),
        }
        .map(Bytes::from)
    }

    /// Authenticates and decrypts an incoming SRTCP packet.
    pub fn unprotect_rtcp(&mut self, packet: &[u8]) -> Result<Bytes, MediaError> {
        if packet.len() < self.srtcp_min {
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
            local_salt: Zeroizing::new(vec![a; profile.salt_len()]),
            remote_key: Zeroizing::new(vec![b; n]),
            remote_salt: Zeroizing::new(vec![b; profile.salt_len()]),
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

    fn rtp(seq: u16, ssrc: u32, csrcs: u8, ext: bool, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80 | csrcs | if ext { 0x10 } else { 0 }, 0];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        for c in 0..csrcs {
            p.extend_from_slice(&(1000 + u32::from(c)).to_be_bytes());
        }
        if ext {
            p.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xaa, 0, 0]);
        }
        p.extend_from_slice(payload);
        p
    }

    /// Our SRTP path against webrtc-srtp's, both ways, every profile, through a
    /// sequence wrap (rollover counter 0 → 1), with CSRCs and a header extension.
    #[test]
    fn srtp_path_interoperates_with_webrtc_srtp() {
        for p in [
            SrtpProfile::Aes128CmHmacSha1_80,
            SrtpProfile::Aes128CmHmacSha1_32,
            SrtpProfile::Aes256CmHmacSha1_80,
            SrtpProfile::Aes256CmHmacSha1_32,
            SrtpProfile::AeadAes128Gcm,
        ] {
            let k = keys(3, 4, p);
            let mut ours = SrtpSession::new(&k).expect("ours");
            let mut theirs_rx = context(profile(p), &k.local_key, &k.local_salt).expect("rx");
            let mut theirs_tx = context(profile(p), &k.remote_key, &k.remote_salt).expect("tx");
            for (i, seq) in (65_500u16..=65_535).chain(0..40).enumerate() {
                let plain = rtp(seq, 0xdead_beef, (i % 3) as u8, i % 2 == 0, &[i as u8; 37]);
                let sealed = ours.protect_rtp(&plain).expect("protect");
                let opened = theirs_rx
                    .decrypt_rtp(&sealed)
                    .expect("webrtc-srtp opens ours");
                assert_eq!(&opened[..], &plain[..], "{p:?} seq {seq}");
                let back = theirs_tx.encrypt_rtp(&plain).expect("webrtc-srtp seals");
                let opened = ours.unprotect_rtp(&back).expect("we open theirs");
                assert_eq!(&opened[..], &plain[..], "{p:?} seq {seq}");
            }
        }
    }

    #[test]
    fn replay_window_and_reordering() {
        for p in [SrtpProfile::Aes128CmHmacSha1_80, SrtpProfile::AeadAes128Gcm] {
            replay_window(p);
        }
    }

    fn replay_window(p: SrtpProfile) {
        let mut alice = SrtpSession::new(&keys(5, 6, p)).expect("alice");
        let mut bob = SrtpSession::new(&keys(6, 5, p)).expect("bob");
        let sealed: Vec<Bytes> = (0u16..300)
            .map(|s| {
                alice
                    .protect_rtp(&rtp(s, 9, 0, false, b"x"))
                    .expect("protect")
            })
            .collect();
        bob.unprotect_rtp(&sealed[0]).expect("first");
        bob.unprotect_rtp(&sealed[200]).expect("a jump ahead");
        bob.unprotect_rtp(&sealed[150])
            .expect("late but inside the window");
        assert!(bob.unprotect_rtp(&sealed[150]).is_err(), "replay refused");
        assert!(
            bob.unprotect_rtp(&sealed[50]).is_err(),
            "older than the window"
        );
        bob.unprotect_rtp(&sealed[299]).expect("next");
        // A truncated tag or body never opens, and never panics.
        for cut in 0..sealed[10].len() {
            assert!(bob.unprotect_rtp(&sealed[10][..cut]).is_err());
        }
    }

    /// Short SRTCP made webrtc-srtp subtract past zero; the smallest real packet (an
    /// empty receiver report) still opens.
    #[test]
    fn short_srtcp_is_refused_and_the_smallest_real_one_opens() {
        for p in [SrtpProfile::Aes128CmHmacSha1_32, SrtpProfile::AeadAes128Gcm] {
            let mut alice = SrtpSession::new(&keys(1, 2, p)).expect("alice");
            let mut bob = SrtpSession::new(&keys(2, 1, p)).expect("bob");
            for len in 0..64 {
                let mut junk = vec![0x8d; len];
                if len > 1 {
                    junk[0] = 0x80;
                    junk[1] = 201;
                }
                assert!(bob.unprotect_rtcp(&junk).is_err(), "{p:?} {len}");
            }
            let empty_rr = [0x80, 201, 0, 1, 0, 0, 0, 9];
            let sealed = alice.protect_rtcp(&empty_rr).expect("protect");
            assert_eq!(&bob.unprotect_rtcp(&sealed).expect("opens")[..], &empty_rr);
        }
    }
}
