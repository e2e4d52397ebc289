//! Smoke test: libotr initialises, generates a DSA key into a Pidgin-format file and a
//! fresh user state reads it back (from a memory buffer) with the same fingerprint.

use otr_sys::*;
use std::ffi::{CStr, CString};

fn fingerprint(us: OtrlUserState, account: &CStr, protocol: &CStr) -> Option<String> {
    let mut buf = [0 as std::ffi::c_char; OTRL_PRIVKEY_FPRINT_HUMAN_LEN as usize];
    let p = unsafe {
        otrl_privkey_fingerprint(us, buf.as_mut_ptr(), account.as_ptr(), protocol.as_ptr())
    };
    if p.is_null() {
        return None;
    }
    Some(
        unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned(),
    )
}

#[test]
fn generate_key_and_read_it_back() {
    assert_eq!(init(), 0, "otrl_init");
    let dir = tempfile::tempdir().expect("tempdir");
    let keyfile = dir.path().join("otr.private_key");
    let keyfile_c = CString::new(keyfile.to_str().expect("utf8 path")).expect("no nul");
    let account = c"alice@localhost";
    let protocol = c"xmpp";

    unsafe {
        let us = otrl_userstate_create();
        assert!(!us.is_null());
        assert!(
            fingerprint(us, account, protocol).is_none(),
            "no key before generation"
        );
        let err =
            otrl_privkey_generate(us, keyfile_c.as_ptr(), account.as_ptr(), protocol.as_ptr());
        assert_eq!(err, 0, "otrl_privkey_generate");
        let fp = fingerprint(us, account, protocol).expect("fingerprint after generation");
        // 5 groups of 8 hex digits separated by spaces.
        let groups: Vec<&str> = fp.split(' ').collect();
        assert_eq!(groups.len(), 5, "{fp}");
        assert!(
            groups
                .iter()
                .all(|g| g.len() == 8 && g.chars().all(|c| c.is_ascii_hexdigit()))
        );

        // Read the key back from an anonymous in-memory file, as the vault will hand
        // keys over (libotr fstat()s the stream, so fmemopen would not do).
        let bytes = std::fs::read(&keyfile).expect("key file written");
        assert!(
            bytes.starts_with(b"(privkeys"),
            "Pidgin S-expression format"
        );
        let fd = libc::memfd_create(c"otr-key".as_ptr(), libc::MFD_CLOEXEC);
        assert!(fd >= 0);
        assert_eq!(
            libc::write(fd, bytes.as_ptr().cast(), bytes.len()),
            bytes.len() as isize
        );
        assert_eq!(libc::lseek(fd, 0, libc::SEEK_SET), 0);
        let f = libc::fdopen(fd, c"r".as_ptr());
        assert!(!f.is_null());
        let us2 = otrl_userstate_create();
        assert_eq!(
            otrl_privkey_read_FILEp(us2, f.cast()),
            0,
            "otrl_privkey_read_FILEp"
        );
        libc::fclose(f);
        assert_eq!(
            fingerprint(us2, account, protocol).as_deref(),
            Some(fp.as_str())
        );
        otrl_userstate_free(us2);
        otrl_userstate_free(us);
    }
}
