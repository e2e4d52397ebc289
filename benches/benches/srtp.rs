//! SRTP protect + unprotect, our path (SrtpSession over webrtc-srtp, replay protection
//! on) against libsrtp 2 built with OpenSSL (replay protection on by default), in the
//! same run, for 80-, 160- and 1200-byte payloads and two profiles.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hush_media::srtp::SrtpSession;
use hush_media::zrtp::{SrtpKeys, SrtpProfile};
use srtp2_sys as sys;
use std::hint::black_box;
use zeroize::Zeroizing;

const SIZES: [usize; 3] = [80, 160, 1200];

fn keys(profile: SrtpProfile, a: u8, b: u8) -> SrtpKeys {
    SrtpKeys {
        profile,
        local_key: Zeroizing::new(vec![a; profile.key_len()]),
        local_salt: Zeroizing::new(vec![a; profile.salt_len()]),
        remote_key: Zeroizing::new(vec![b; profile.key_len()]),
        remote_salt: Zeroizing::new(vec![b; profile.salt_len()]),
    }
}

fn packet(seq: u16, payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 160, 0x12, 0x34, 0x56, 0x78]);
    out[2..4].copy_from_slice(&seq.to_be_bytes());
    out[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    out.extend_from_slice(payload);
}

struct LibSrtp {
    tx: sys::srtp_t,
    rx: sys::srtp_t,
}

impl LibSrtp {
    fn new(profile: SrtpProfile) -> LibSrtp {
        static INIT: std::sync::Once = std::sync::Once::new();
        INIT.call_once(|| unsafe {
            assert_eq!(sys::srtp_init(), sys::srtp_err_status_t_srtp_err_status_ok);
        });
        unsafe {
            let mut key = vec![7u8; profile.key_len() + profile.salt_len()];
            let make = |direction: sys::srtp_ssrc_type_t, key: &mut Vec<u8>| {
                let mut policy: sys::srtp_policy_t = std::mem::zeroed();
                match profile {
                    SrtpProfile::AeadAes128Gcm => {
                        sys::srtp_crypto_policy_set_aes_gcm_128_16_auth(&mut policy.rtp);
                        sys::srtp_crypto_policy_set_aes_gcm_128_16_auth(&mut policy.rtcp);
                    }
                    _ => {
                        sys::srtp_crypto_policy_set_rtp_default(&mut policy.rtp);
                        sys::srtp_crypto_policy_set_rtcp_default(&mut policy.rtcp);
                    }
                }
                policy.ssrc.type_ = direction;
                policy.key = key.as_mut_ptr();
                policy.window_size = 128;
                policy.allow_repeat_tx = 0;
                let mut session: sys::srtp_t = std::ptr::null_mut();
                assert_eq!(
                    sys::srtp_create(&mut session, &policy),
                    sys::srtp_err_status_t_srtp_err_status_ok
                );
                session
            };
            let tx = make(sys::srtp_ssrc_type_t_ssrc_any_outbound, &mut key);
            let rx = make(sys::srtp_ssrc_type_t_ssrc_any_inbound, &mut key);
            LibSrtp { tx, rx }
        }
    }

    /// Protects and unprotects `buf` in place (it has room for the tag).
    fn round_trip(&mut self, buf: &mut Vec<u8>) {
        let mut len = buf.len() as i32;
        buf.resize(buf.len() + 64, 0);
        unsafe {
            let st = sys::srtp_protect(self.tx, buf.as_mut_ptr().cast(), &mut len);
            debug_assert_eq!(st, sys::srtp_err_status_t_srtp_err_status_ok);
            let st = sys::srtp_unprotect(self.rx, buf.as_mut_ptr().cast(), &mut len);
            debug_assert_eq!(st, sys::srtp_err_status_t_srtp_err_status_ok);
        }
        buf.truncate(len as usize);
    }
}

fn bench(c: &mut Criterion) {
    for (profile, name) in [
        (SrtpProfile::Aes128CmHmacSha1_80, "AES_CM_128_HMAC_SHA1_80"),
        (SrtpProfile::AeadAes128Gcm, "AEAD_AES_128_GCM"),
    ] {
        let mut group = c.benchmark_group(format!("srtp/{name}"));
        for size in SIZES {
            let payload = vec![0xa5u8; size];
            group.throughput(Throughput::Bytes(size as u64));
            group.bench_with_input(BenchmarkId::new("hushphone", size), &size, |b, _| {
                let mut tx = SrtpSession::new(&keys(profile, 1, 2)).expect("tx");
                let mut rx = SrtpSession::new(&keys(profile, 2, 1)).expect("rx");
                let mut seq = 0u16;
                let mut buf = Vec::with_capacity(1500);
                b.iter(|| {
                    seq = seq.wrapping_add(1);
                    packet(seq, &payload, &mut buf);
                    let sealed = tx.protect_rtp(&buf).expect("protect");
                    let plain = rx.unprotect_rtp(&sealed).expect("unprotect");
                    black_box(plain.len())
                });
            });
            group.bench_with_input(BenchmarkId::new("libsrtp-openssl", size), &size, |b, _| {
                let mut lib = LibSrtp::new(profile);
                let mut seq = 0u16;
                let mut buf = Vec::with_capacity(1500);
                b.iter(|| {
                    seq = seq.wrapping_add(1);
                    packet(seq, &payload, &mut buf);
                    lib.round_trip(&mut buf);
                    black_box(buf.len())
                });
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
