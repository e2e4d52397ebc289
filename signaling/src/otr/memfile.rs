//! In-memory `FILE*`s for libotr's file-based key and fingerprint functions, so keys
//! move between the vault and libotr without touching the disk. Backed by memfd
//! (libotr fstat()s the stream; fmemopen would not do). Contents are overwritten with
//! zeros before the file is closed.

use std::ffi::CStr;
use std::ptr;

/// A FILE* over an anonymous memory file.
pub(crate) struct MemFile {
    file: *mut libc::FILE,
    fd: i32,
}

impl MemFile {
    /// A file holding `bytes`, positioned at the start, opened with `mode` ("r" or "w+").
    pub(crate) fn with(bytes: &[u8], mode: &CStr) -> Option<MemFile> {
        // SAFETY: plain libc calls; every result is checked and the fd is owned by the
        // FILE from fdopen on.
        unsafe {
            let fd = libc::memfd_create(c"hush-otr".as_ptr(), libc::MFD_CLOEXEC);
            if fd < 0 {
                return None;
            }
            let mut written = 0usize;
            while written < bytes.len() {
                let n = libc::write(fd, bytes[written..].as_ptr().cast(), bytes.len() - written);
                if n <= 0 {
                    libc::close(fd);
                    return None;
                }
                written += n as usize;
            }
            if libc::lseek(fd, 0, libc::SEEK_SET) != 0 {
                libc::close(fd);
                return None;
            }
            let file = libc::fdopen(fd, mode.as_ptr());
            if file.is_null() {
                libc::close(fd);
                return None;
            }
            // Unbuffered, so that the C library keeps no copy of the key text in a
            // buffer of its own that nobody wipes: every read and write goes straight to
            // the memory file, which Drop overwrites. (libotr still copies what it
            // parses into its own allocations, which it frees without wiping; that
            // cannot be helped from our side.)
            if libc::setvbuf(file, ptr::null_mut(), libc::_IONBF, 0) != 0 {
                libc::fclose(file);
                return None;
            }
            Some(MemFile { file, fd })
        }
    }

    /// An empty file for libotr to write into.
    pub(crate) fn empty() -> Option<MemFile> {
        MemFile::with(&[], c"w+")
    }

    /// The FILE* for libotr (as its own bindgen type).
    pub(crate) fn ptr(&self) -> *mut otr_sys::FILE {
        self.file.cast()
    }

    /// Everything in the file now.
    pub(crate) fn contents(&self) -> zeroize::Zeroizing<Vec<u8>> {
        let mut out = zeroize::Zeroizing::new(Vec::new());
        // SAFETY: our open FILE and its fd; reads are bounded by the buffer.
        unsafe {
            libc::fflush(self.file);
            let end = libc::lseek(self.fd, 0, libc::SEEK_END);
            if end <= 0 || libc::lseek(self.fd, 0, libc::SEEK_SET) != 0 {
                return out;
            }
            out.resize(end as usize, 0);
            let mut read = 0usize;
            while read < out.len() {
                let n = libc::read(self.fd, out[read..].as_mut_ptr().cast(), out.len() - read);
                if n <= 0 {
                    out.truncate(read);
                    break;
                }
                read += n as usize;
            }
        }
        out
    }
}

impl Drop for MemFile {
    fn drop(&mut self) {
        // SAFETY: overwrite then close our own FILE exactly once.
        unsafe {
            libc::fflush(self.file);
            let end = libc::lseek(self.fd, 0, libc::SEEK_END);
            if end > 0 && libc::lseek(self.fd, 0, libc::SEEK_SET) == 0 {
                let zeros = vec![0u8; end as usize];
                libc::write(self.fd, zeros.as_ptr().cast(), zeros.len());
            }
            libc::fclose(self.file);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::MemFile;

    unsafe extern "C" {
        /// glibc (stdio_ext.h): the size of a stream's buffer.
        fn __fbufsize(stream: *mut libc::FILE) -> libc::size_t;
    }

    #[test]
    fn the_c_library_keeps_no_buffered_copy_of_the_text() {
        let f = MemFile::with(b"(privkeys (account (name \"me\")))", c"r").expect("file");
        // SAFETY: our open FILE; a read makes glibc set up its buffer if it has one.
        let (first, size) = unsafe {
            let file = f.ptr().cast::<libc::FILE>();
            (libc::fgetc(file), __fbufsize(file))
        };
        assert_eq!(first, i32::from(b'('));
        assert!(
            size <= 1,
            "the C library buffers {size} bytes of the key text"
        );
        let w = MemFile::empty().expect("file");
        // SAFETY: as above.
        let size = unsafe {
            let file = w.ptr().cast::<libc::FILE>();
            libc::fputs(c"secret".as_ptr(), file);
            __fbufsize(file)
        };
        assert!(
            size <= 1,
            "the C library buffers {size} bytes of what libotr writes"
        );
        assert_eq!(&w.contents()[..], b"secret");
    }
}
