//! The few V4L2 calls a camera needs, over `ioctl(2)` on the device node. The
//! structures are the kernel's UAPI (`linux/videodev2.h`), 64-bit layout; their sizes
//! are checked at compile time, because each is also encoded in its ioctl number.

use std::fs::File;
use std::os::fd::AsRawFd;

pub(crate) const BUF_TYPE_VIDEO_CAPTURE: u32 = 1;
pub(crate) const MEMORY_MMAP: u32 = 1;
pub(crate) const FIELD_ANY: u32 = 0;
pub(crate) const FIELD_NONE: u32 = 1;
pub(crate) const CAP_VIDEO_CAPTURE: u32 = 0x0000_0001;
pub(crate) const CAP_STREAMING: u32 = 0x0400_0000;
pub(crate) const CAP_DEVICE_CAPS: u32 = 0x8000_0000;
pub(crate) const CAP_TIMEPERFRAME: u32 = 0x1000;
pub(crate) const BUF_FLAG_ERROR: u32 = 0x0040;

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Capability {
    pub(crate) driver: [u8; 16],
    pub(crate) card: [u8; 32],
    pub(crate) bus_info: [u8; 32],
    pub(crate) version: u32,
    pub(crate) capabilities: u32,
    pub(crate) device_caps: u32,
    pub(crate) reserved: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct FmtDesc {
    pub(crate) index: u32,
    pub(crate) kind: u32,
    pub(crate) flags: u32,
    pub(crate) description: [u8; 32],
    pub(crate) pixelformat: u32,
    pub(crate) mbus_code: u32,
    pub(crate) reserved: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct PixFormat {
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) pixelformat: u32,
    pub(crate) field: u32,
    pub(crate) bytesperline: u32,
    pub(crate) sizeimage: u32,
    pub(crate) colorspace: u32,
    pub(crate) private: u32,
    pub(crate) flags: u32,
    pub(crate) ycbcr_enc: u32,
    pub(crate) quantization: u32,
    pub(crate) xfer_func: u32,
}

/// `struct v4l2_format`: the union is 200 bytes, 8-aligned (it holds pointers).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Format {
    pub(crate) kind: u32,
    pub(crate) pix: FormatUnion,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) union FormatUnion {
    pub(crate) pix: PixFormat,
    raw: [u8; 200],
    align: [u64; 25],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct RequestBuffers {
    pub(crate) count: u32,
    pub(crate) kind: u32,
    pub(crate) memory: u32,
    pub(crate) capabilities: u32,
    pub(crate) flags: u8,
    pub(crate) reserved: [u8; 3],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct TimeCode {
    pub(crate) kind: u32,
    pub(crate) flags: u32,
    pub(crate) frames: u8,
    pub(crate) seconds: u8,
    pub(crate) minutes: u8,
    pub(crate) hours: u8,
    pub(crate) userbits: [u8; 4],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Buffer {
    pub(crate) index: u32,
    pub(crate) kind: u32,
    pub(crate) bytesused: u32,
    pub(crate) flags: u32,
    pub(crate) field: u32,
    pub(crate) timestamp: libc::timeval,
    pub(crate) timecode: TimeCode,
    pub(crate) sequence: u32,
    pub(crate) memory: u32,
    /// The union `m`, pointer-sized; for MMAP buffers its first 4 bytes are the
    /// offset to map ([`Buffer::mmap_offset`]).
    pub(crate) m: u64,
    pub(crate) length: u32,
    pub(crate) reserved2: u32,
    pub(crate) request_fd: u32,
}

impl Buffer {
    /// A memory-mapped capture buffer, numbered `index`, to hand to an ioctl.
    pub(crate) fn capture(index: u32) -> Buffer {
        Buffer {
            index,
            kind: BUF_TYPE_VIDEO_CAPTURE,
            memory: MEMORY_MMAP,
            ..Plain::zeroed()
        }
    }

    /// `m.offset`: the union's first 4 bytes (the rest is not ours to read).
    pub(crate) fn mmap_offset(&self) -> u32 {
        self.m.to_ne_bytes()[..4]
            .try_into()
            .map(u32::from_ne_bytes)
            .unwrap_or(0)
    }
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Fraction {
    pub(crate) numerator: u32,
    pub(crate) denominator: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct CaptureParm {
    pub(crate) capability: u32,
    pub(crate) capturemode: u32,
    pub(crate) timeperframe: Fraction,
    pub(crate) extendedmode: u32,
    pub(crate) readbuffers: u32,
    pub(crate) reserved: [u32; 4],
}

/// `struct v4l2_streamparm`: the union is 200 bytes.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct StreamParm {
    pub(crate) kind: u32,
    pub(crate) parm: ParmUnion,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) union ParmUnion {
    pub(crate) capture: CaptureParm,
    raw: [u8; 200],
}

const _: () = {
    assert!(size_of::<Capability>() == 104);
    assert!(size_of::<FmtDesc>() == 64);
    assert!(size_of::<Format>() == 208);
    assert!(size_of::<RequestBuffers>() == 20);
    assert!(size_of::<Buffer>() == 88);
    assert!(size_of::<StreamParm>() == 204);
};

/// `_IOC(dir, 'V', nr, size)`.
const fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | ((b'V' as u64) << 8) | nr
}
const READ: u64 = 2;
const WRITE: u64 = 1;
const RW: u64 = 3;

pub(crate) const QUERYCAP: u64 = ioc(READ, 0, size_of::<Capability>());
pub(crate) const ENUM_FMT: u64 = ioc(RW, 2, size_of::<FmtDesc>());
pub(crate) const S_FMT: u64 = ioc(RW, 5, size_of::<Format>());
pub(crate) const REQBUFS: u64 = ioc(RW, 8, size_of::<RequestBuffers>());
pub(crate) const QUERYBUF: u64 = ioc(RW, 9, size_of::<Buffer>());
pub(crate) const QBUF: u64 = ioc(RW, 15, size_of::<Buffer>());
pub(crate) const DQBUF: u64 = ioc(RW, 17, size_of::<Buffer>());
pub(crate) const STREAMON: u64 = ioc(WRITE, 18, size_of::<libc::c_int>());
pub(crate) const STREAMOFF: u64 = ioc(WRITE, 19, size_of::<libc::c_int>());
pub(crate) const S_PARM: u64 = ioc(RW, 22, size_of::<StreamParm>());

/// A plain-data V4L2 structure: any bit pattern, all zeros included, is a valid value.
///
/// # Safety
/// Only for `repr(C)` structures of integers, arrays of them and unions of those.
pub(crate) unsafe trait Plain: Copy {
    fn zeroed() -> Self {
        // SAFETY: the trait's contract: all-zero bytes are a valid value.
        unsafe { std::mem::zeroed() }
    }
}
// SAFETY: each is repr(C) plain integers (and unions of them); timeval is two integers.
unsafe impl Plain for Capability {}
unsafe impl Plain for FmtDesc {}
unsafe impl Plain for Format {}
unsafe impl Plain for RequestBuffers {}
unsafe impl Plain for Buffer {}
unsafe impl Plain for StreamParm {}
unsafe impl Plain for CaptureParm {}
unsafe impl Plain for PixFormat {}
unsafe impl Plain for libc::c_int {}

/// One ioctl whose argument is `arg` (read, written or both by the kernel, as `request`
/// says; the request's encoded size is `T`'s, checked above).
pub(crate) fn ioctl<T: Plain>(file: &File, request: u64, arg: &mut T) -> std::io::Result<()> {
    // The size the request encodes must be T's, or the kernel would touch other bytes.
    if (request >> 16) & 0x3fff != size_of::<T>() as u64 {
        return Err(std::io::Error::other(
            "an ioctl whose size is not its argument's",
        ));
    }
    loop {
        // SAFETY: `arg` is a valid, exclusively borrowed `T` for the whole call, and
        // `request` encodes `size_of::<T>()`, so the kernel touches only its bytes; any
        // bytes it writes form a valid `T` (`Plain`).
        let r = unsafe {
            libc::ioctl(
                file.as_raw_fd(),
                request as libc::Ioctl,
                arg as *mut T as *mut libc::c_void,
            )
        };
        if r >= 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// A NUL-terminated name field as text.
pub(crate) fn name(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).trim().to_string()
}

/// What a device node can do, by `VIDIOC_QUERYCAP`: its card name and whether it
/// captures video by streaming I/O.
pub(crate) fn query(file: &File) -> std::io::Result<(String, bool)> {
    let mut cap = Capability::zeroed();
    ioctl(file, QUERYCAP, &mut cap)?;
    let caps = if cap.capabilities & CAP_DEVICE_CAPS != 0 {
        cap.device_caps
    } else {
        cap.capabilities
    };
    let captures = caps & CAP_VIDEO_CAPTURE != 0 && caps & CAP_STREAMING != 0;
    Ok((name(&cap.card), captures))
}
