//! Starting libotr. The wrapper reads libotr's private `ConnContextPriv` (fragment
//! buffers, when each instance was last heard from) and frees every context's private
//! part itself, because libotr 4.1.1 leaks it when a context is forgotten. A libotr that
//! laid that struct out differently, or freed it, would be read wrongly or freed twice;
//! and 4.1.0 overflows the heap on long fragmented messages (CVE-2016-2851). So exactly
//! the release whose behaviour we checked is accepted, both as the headers we were
//! built with and as the library we run with.

use super::engine::OtrError;
use otr_sys as ffi;
use std::ffi::CStr;

/// The one libotr release this wrapper relies on.
pub(super) const RELIED_ON: (u32, u32, u32) = (4, 1, 1);

/// libotr's start-up result, run once per process.
static INIT: std::sync::OnceLock<ffi::gcry_error_t> = std::sync::OnceLock::new();

/// Starts libotr for a wrapper built against API `built`: refused unless both that and
/// the installed library are [`RELIED_ON`]; then libotr's own start-up must succeed.
/// (`otrl_init` itself only checks that the major versions match and that the library's
/// minor version is not older than the one asked for: it cannot tell 4.1.0 from 4.1.1,
/// and knows nothing of what we read of its private structs.)
pub(super) fn start(built: (u32, u32, u32)) -> Result<(), OtrError> {
    let linked = linked_version();
    if let Some(why) = refusal(built, &linked) {
        tracing::error!(%linked, "libotr version does not match what this build relies on");
        return Err(OtrError::Unavailable(why));
    }
    let (a, b, c) = built;
    // SAFETY: records the version and initialises libotr's memory and crypto modules;
    // once per process, with the version both sides agreed on above.
    let err = *INIT.get_or_init(|| unsafe { ffi::otrl_init(a, b, c) });
    if err != 0 {
        tracing::error!(error = err, "libotr refused to start");
        return Err(OtrError::Unavailable(format!(
            "libotr {linked} failed to start (error {err})"
        )));
    }
    Ok(())
}

/// Why a wrapper built against `built` must not run with the libotr whose version
/// string is `linked`; `None` if it may.
fn refusal(built: (u32, u32, u32), linked: &str) -> Option<String> {
    let (x, y, z) = RELIED_ON;
    if built != RELIED_ON {
        let (a, b, c) = built;
        return Some(format!(
            "this Hushphone was built against libotr {a}.{b}.{c}, but it relies on the exact behaviour of libotr {x}.{y}.{z}"
        ));
    }
    if parse(linked) != Some(RELIED_ON) {
        return Some(format!(
            "this Hushphone relies on libotr {x}.{y}.{z} exactly, but libotr {linked} is installed"
        ));
    }
    None
}

/// "4.1.1" → (4, 1, 1); nothing else, not even a suffix.
fn parse(v: &str) -> Option<(u32, u32, u32)> {
    let mut parts = v.split('.');
    let mut next = || -> Option<u32> {
        let p = parts.next()?;
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse().ok()
    };
    let version = (next()?, next()?, next()?);
    parts.next().is_none().then_some(version)
}

/// The version string of the libotr we are linked with.
fn linked_version() -> String {
    // SAFETY: libotr returns a pointer to a static NUL-terminated string.
    let p = unsafe { ffi::otrl_version() };
    if p.is_null() {
        return String::new();
    }
    // SAFETY: see above; copied at once.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_libotr_4_1_1_is_accepted() {
        assert_eq!(refusal((4, 1, 1), "4.1.1"), None);
        for linked in [
            "4.1.0", "4.1.2", "4.2.0", "4.0.0", "5.0.0", "4.1", "4.1.1.1", "4.1.1-x", "",
        ] {
            let why = refusal((4, 1, 1), linked).expect(linked);
            assert!(why.contains("4.1.1 exactly"), "{why}");
        }
        for built in [(4, 0, 0), (4, 1, 0), (4, 2, 0), (3, 2, 1)] {
            let why = refusal(built, "4.1.1").expect("refused");
            assert!(why.contains("relies on the exact behaviour"), "{why}");
        }
    }

    #[test]
    fn the_installed_library_is_the_one_relied_on() {
        assert_eq!(parse(&linked_version()), Some(RELIED_ON));
    }
}
