//! Smoke test: two real bzrtp contexts wired back to back in memory reach the secure
//! state, agree on the SAS and derive cross-matching SRTP keys.

use bzrtp_sys::*;
use std::collections::VecDeque;
use std::ffi::CStr;

#[derive(Default)]
struct Side {
    outbox: VecDeque<Vec<u8>>,
    sas: Option<String>,
    self_key: Vec<u8>,
    peer_key: Vec<u8>,
    key_agreement: u8,
}

unsafe extern "C" fn send_data(client: *mut std::ffi::c_void, packet: *const u8, len: u16) -> i32 {
    let side = unsafe { &mut *(client as *mut Side) };
    let bytes = unsafe { std::slice::from_raw_parts(packet, len as usize) };
    side.outbox.push_back(bytes.to_vec());
    0
}

unsafe extern "C" fn secrets_available(
    client: *mut std::ffi::c_void,
    secrets: *const bzrtpSrtpSecrets_t,
    part: u8,
) -> i32 {
    let side = unsafe { &mut *(client as *mut Side) };
    let s = unsafe { &*secrets };
    if part as u32 & ZRTP_SRTP_SECRETS_FOR_SENDER != 0 {
        side.self_key =
            unsafe { std::slice::from_raw_parts(s.selfSrtpKey, s.selfSrtpKeyLength as usize) }
                .to_vec();
    }
    if part as u32 & ZRTP_SRTP_SECRETS_FOR_RECEIVER != 0 {
        side.peer_key =
            unsafe { std::slice::from_raw_parts(s.peerSrtpKey, s.peerSrtpKeyLength as usize) }
                .to_vec();
    }
    0
}

unsafe extern "C" fn start_srtp(
    client: *mut std::ffi::c_void,
    secrets: *const bzrtpSrtpSecrets_t,
    _verified: i32,
) -> i32 {
    let side = unsafe { &mut *(client as *mut Side) };
    let s = unsafe { &*secrets };
    side.sas = Some(
        unsafe { CStr::from_ptr(s.sas) }
            .to_string_lossy()
            .into_owned(),
    );
    side.key_agreement = s.keyAgreementAlgo;
    0
}

fn handshake(key_agreement: u8) {
    let callbacks = bzrtpCallbacks_t {
        bzrtp_sendData: Some(send_data),
        bzrtp_srtpSecretsAvailable: Some(secrets_available),
        bzrtp_startSrtpSession: Some(start_srtp),
        ..Default::default()
    };
    let mut sides = [Box::new(Side::default()), Box::new(Side::default())];
    let ssrcs = [0x1111_1111u32, 0x2222_2222u32];
    unsafe {
        let ctxs = [bzrtp_createBzrtpContext(), bzrtp_createBzrtpContext()];
        for i in 0..2 {
            assert!(!ctxs[i].is_null());
            assert_eq!(bzrtp_setCallbacks(ctxs[i], &callbacks), 0);
            let mut ka = [key_agreement, 0, 0, 0, 0, 0, 0];
            bzrtp_setSupportedCryptoTypes(
                ctxs[i],
                ZRTP_KEYAGREEMENT_TYPE as u8,
                ka.as_mut_ptr(),
                1,
            );
            assert_eq!(bzrtp_initBzrtpContext(ctxs[i], ssrcs[i]), 0);
            let client: *mut Side = &mut *sides[i];
            assert_eq!(bzrtp_setClientData(ctxs[i], ssrcs[i], client.cast()), 0);
        }
        for i in 0..2 {
            assert_eq!(bzrtp_startChannelEngine(ctxs[i], ssrcs[i]), 0);
        }
        let mut now = 0u64;
        for _ in 0..2000 {
            for i in 0..2 {
                let packets: Vec<Vec<u8>> = sides[i].outbox.drain(..).collect();
                for mut p in packets {
                    // Retransmissions that cross state changes are refused with a
                    // parser code (0xa200, unexpected message); that is not fatal.
                    let _ = bzrtp_processMessage(
                        ctxs[1 - i],
                        ssrcs[1 - i],
                        p.as_mut_ptr(),
                        p.len() as u16,
                    );
                }
            }
            now += 10;
            for i in 0..2 {
                bzrtp_iterate(ctxs[i], ssrcs[i], now);
            }
            let secure = (0..2)
                .all(|i| bzrtp_getChannelStatus(ctxs[i], ssrcs[i]) == BZRTP_CHANNEL_SECURE as i32);
            if secure && sides.iter().all(|s| s.sas.is_some()) {
                break;
            }
        }
        for i in 0..2 {
            assert_eq!(
                bzrtp_getChannelStatus(ctxs[i], ssrcs[i]),
                BZRTP_CHANNEL_SECURE as i32
            );
        }
        let sas0 = sides[0].sas.clone().expect("side 0 has a SAS");
        let sas1 = sides[1].sas.clone().expect("side 1 has a SAS");
        assert_eq!(sas0, sas1);
        assert_eq!(sas0.len(), 4, "B32 SAS is four characters");
        assert!(!sides[0].self_key.is_empty());
        assert_eq!(sides[0].self_key, sides[1].peer_key);
        assert_eq!(sides[1].self_key, sides[0].peer_key);
        assert_ne!(sides[0].self_key, sides[0].peer_key);
        assert_eq!(sides[0].key_agreement, key_agreement);
        for i in 0..2 {
            bzrtp_destroyBzrtpContext(ctxs[i], ssrcs[i]);
        }
    }
}

#[test]
fn two_contexts_reach_secure_with_equal_sas_x25519() {
    handshake(ZRTP_KEYAGREEMENT_X255 as u8);
}

#[test]
fn two_contexts_reach_secure_with_equal_sas_dh3k() {
    handshake(ZRTP_KEYAGREEMENT_DH3k as u8);
}
