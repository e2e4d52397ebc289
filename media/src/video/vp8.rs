//! VP8 over libvpx, set up for calls as mediastreamer2 does: constant bit rate, no
//! look-ahead, error resilient, real-time deadline, a key frame whenever the peer asks
//! (PLI/FIR). The decoder only ever sees frames whose declared size we accept, and
//! hands back packed I420 copies.

use super::frame::{I420Frame, i420_size};
use super::{MAX_HEIGHT, MAX_WIDTH};
use crate::MediaError;
use std::mem::MaybeUninit;
use std::os::raw::{c_int, c_long, c_uint, c_ulong};
use vpx_sys as vpx;

/// How the encoder should code a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncoderConfig {
    /// Picture width (even numbers only would waste nothing; any size 1..=MAX works).
    pub width: u32,
    /// Picture height.
    pub height: u32,
    /// Frames per second the source delivers.
    pub fps: u32,
    /// Target bit rate.
    pub bitrate_kbps: u32,
    /// Screen content (text, flat colours, little motion) rather than a camera.
    pub screen: bool,
}

/// One coded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    /// The VP8 bitstream of the frame.
    pub data: Vec<u8>,
    /// It decodes on its own (a key frame).
    pub key: bool,
}

fn codec_error(what: &str, err: vpx::vpx_codec_err_t) -> MediaError {
    // SAFETY: libvpx returns a pointer to a static string for every error code.
    let text = unsafe { std::ffi::CStr::from_ptr(vpx::vpx_codec_err_to_string(err)) };
    MediaError::Codec(format!("VP8 {what}: {}", text.to_string_lossy()))
}

fn check(what: &str, err: vpx::vpx_codec_err_t) -> Result<(), MediaError> {
    match err {
        vpx::vpx_codec_err_t::VPX_CODEC_OK => Ok(()),
        e => Err(codec_error(what, e)),
    }
}

/// Most frames per second and bit rate we configure (beyond is a caller's mistake).
const MAX_FPS: u32 = 120;
const MAX_KBPS: u32 = 50_000;

/// A libvpx context, destroyed with its owner. Boxed: libvpx is given its address
/// once and the context must not move afterwards.
struct Context(Box<MaybeUninit<vpx::vpx_codec_ctx_t>>);

impl Context {
    fn new() -> Context {
        Context(Box::new(MaybeUninit::zeroed()))
    }

    fn ptr(&mut self) -> *mut vpx::vpx_codec_ctx_t {
        self.0.as_mut_ptr()
    }
}

/// A VP8 encoder for one stream.
pub struct Vp8Encoder {
    /// Initialised (the constructor fails otherwise); destroyed in `Drop`.
    ctx: Context,
    cfg: vpx::vpx_codec_enc_cfg_t,
    config: EncoderConfig,
    /// Presentation time of the next frame, in milliseconds (the time base).
    pts: i64,
}

// SAFETY: a libvpx codec context has no thread affinity; it must only not be used from
// two threads at once, which `&mut self` on every call guarantees.
unsafe impl Send for Vp8Encoder {}

fn check_config(c: &EncoderConfig) -> Result<(), MediaError> {
    i420_size(c.width, c.height)?;
    if c.fps == 0 || c.fps > MAX_FPS {
        return Err(MediaError::InvalidInput(format!(
            "{} frames per second: 1 to {MAX_FPS} are handled",
            c.fps
        )));
    }
    if c.bitrate_kbps == 0 || c.bitrate_kbps > MAX_KBPS {
        return Err(MediaError::InvalidInput(format!(
            "{} kbit/s: 1 to {MAX_KBPS} are handled",
            c.bitrate_kbps
        )));
    }
    Ok(())
}

impl Vp8Encoder {
    /// An encoder for pictures of the configured size.
    pub fn new(config: EncoderConfig) -> Result<Vp8Encoder, MediaError> {
        check_config(&config)?;
        let mut cfg = MaybeUninit::<vpx::vpx_codec_enc_cfg_t>::zeroed();
        // SAFETY: libvpx fills the whole configuration with its defaults.
        check("defaults", unsafe {
            vpx::vpx_codec_enc_config_default(vpx::vpx_codec_vp8_cx(), cfg.as_mut_ptr(), 0)
        })?;
        // SAFETY: filled just above (the call succeeded).
        let mut cfg = unsafe { cfg.assume_init() };
        cfg.g_w = config.width;
        cfg.g_h = config.height;
        cfg.g_timebase = vpx::vpx_rational { num: 1, den: 1000 };
        // Measured: two threads were much slower than one on a busy two-core machine.
        cfg.g_threads = 1;
        cfg.g_lag_in_frames = 0;
        cfg.g_error_resilient = vpx::VPX_ERROR_RESILIENT_DEFAULT;
        cfg.rc_end_usage = vpx::vpx_rc_mode::VPX_CBR;
        cfg.rc_target_bitrate = config.bitrate_kbps;
        cfg.rc_min_quantizer = 4;
        cfg.rc_max_quantizer = 56;
        cfg.rc_buf_sz = 1000;
        cfg.rc_buf_initial_sz = 500;
        cfg.rc_buf_optimal_sz = 600;
        cfg.rc_undershoot_pct = 95;
        cfg.rc_overshoot_pct = 15;
        // Key frames come on request; one every ten seconds at most otherwise, so a
        // viewer that missed a request recovers anyway.
        cfg.kf_mode = vpx::vpx_kf_mode::VPX_KF_AUTO;
        cfg.kf_min_dist = 0;
        cfg.kf_max_dist = config.fps * 10;
        let mut ctx = Context::new();
        // SAFETY: a zeroed context to initialise, a filled configuration, the ABI
        // version these bindings were generated for.
        check("encoder start", unsafe {
            vpx::vpx_codec_enc_init_ver(
                ctx.ptr(),
                vpx::vpx_codec_vp8_cx(),
                &cfg,
                0,
                vpx::VPX_ENCODER_ABI_VERSION as c_int,
            )
        })?;
        let mut enc = Vp8Encoder {
            ctx,
            cfg,
            config,
            pts: 0,
        };
        // Real-time speed (higher is faster and coarser), one token partition (the
        // payloader need not know partitions), screen tools for screen content.
        enc.control(vpx::vp8e_enc_control_id::VP8E_SET_CPUUSED, 8)?;
        enc.control(vpx::vp8e_enc_control_id::VP8E_SET_TOKEN_PARTITIONS, 0)?;
        enc.control(vpx::vp8e_enc_control_id::VP8E_SET_NOISE_SENSITIVITY, 0)?;
        if config.screen {
            enc.control(vpx::vp8e_enc_control_id::VP8E_SET_SCREEN_CONTENT_MODE, 1)?;
            enc.control(vpx::vp8e_enc_control_id::VP8E_SET_STATIC_THRESHOLD, 100)?;
        }
        Ok(enc)
    }

    fn control(&mut self, id: vpx::vp8e_enc_control_id, value: c_int) -> Result<(), MediaError> {
        // SAFETY: an initialised context; these controls all take one int.
        check("setting", unsafe {
            vpx::vpx_codec_control_(self.ctx.ptr(), id as c_int, value)
        })
    }

    /// What the encoder codes.
    pub fn config(&self) -> EncoderConfig {
        self.config
    }

    /// Changes the target bit rate (from the peer's loss reports).
    pub fn set_bitrate(&mut self, kbps: u32) -> Result<(), MediaError> {
        let config = EncoderConfig {
            bitrate_kbps: kbps,
            ..self.config
        };
        check_config(&config)?;
        self.cfg.rc_target_bitrate = kbps;
        // SAFETY: an initialised context and a configuration it was started with.
        check("bit rate", unsafe {
            vpx::vpx_codec_enc_config_set(self.ctx.ptr(), &self.cfg)
        })?;
        self.config = config;
        Ok(())
    }

    /// Changes the frame rate the source delivers (each frame's duration follows).
    pub fn set_fps(&mut self, fps: u32) -> Result<(), MediaError> {
        let config = EncoderConfig { fps, ..self.config };
        check_config(&config)?;
        self.cfg.kf_max_dist = fps * 10;
        // SAFETY: an initialised context and a configuration it was started with.
        check("frame rate", unsafe {
            vpx::vpx_codec_enc_config_set(self.ctx.ptr(), &self.cfg)
        })?;
        self.config = config;
        Ok(())
    }

    /// Codes one picture; `key` forces a key frame (the peer lost the picture). May
    /// give nothing (the rate control dropped the frame).
    pub fn encode(
        &mut self,
        frame: &I420Frame,
        key: bool,
    ) -> Result<Vec<EncodedFrame>, MediaError> {
        if (frame.width(), frame.height()) != (self.config.width, self.config.height) {
            return Err(MediaError::InvalidInput(format!(
                "a {}x{} picture for a {}x{} encoder",
                frame.width(),
                frame.height(),
                self.config.width,
                self.config.height
            )));
        }
        let mut img = MaybeUninit::<vpx::vpx_image_t>::zeroed();
        let (y, u, v) = frame.planes();
        let cw = frame.chroma_width() as c_int;
        // SAFETY: wraps (does not copy or take) our buffer; the image only lives
        // during this call, and with no look-ahead libvpx keeps no pointer to it.
        let img = unsafe {
            let p = vpx::vpx_img_wrap(
                img.as_mut_ptr(),
                vpx::vpx_img_fmt::VPX_IMG_FMT_I420,
                frame.width() as c_uint,
                frame.height() as c_uint,
                1,
                y.as_ptr() as *mut u8,
            );
            if p.is_null() {
                return Err(MediaError::Codec("VP8: the picture was refused".into()));
            }
            let mut img = img.assume_init();
            // Our chroma planes are rounded up for odd sizes; say exactly where they are.
            img.planes[0] = y.as_ptr() as *mut u8;
            img.planes[1] = u.as_ptr() as *mut u8;
            img.planes[2] = v.as_ptr() as *mut u8;
            img.stride[0] = frame.width() as c_int;
            img.stride[1] = cw;
            img.stride[2] = cw;
            img
        };
        let duration = 1000 / c_ulong::from(self.config.fps.max(1));
        let flags: c_long = if key {
            vpx::VPX_EFLAG_FORCE_KF as c_long
        } else {
            0
        };
        // SAFETY: an initialised context, an image over live planes of the size the
        // encoder was set up for (checked above).
        check("encoding", unsafe {
            vpx::vpx_codec_encode(
                self.ctx.ptr(),
                &img,
                self.pts,
                duration,
                flags,
                vpx::VPX_DL_REALTIME as c_ulong,
            )
        })?;
        self.pts += duration as i64;
        let mut out = Vec::new();
        let mut iter = std::ptr::null();
        loop {
            // SAFETY: walks the packets of the frame just coded; each stays valid
            // until the next call on the context.
            let pkt = unsafe { vpx::vpx_codec_get_cx_data(self.ctx.ptr(), &mut iter) };
            if pkt.is_null() {
                break;
            }
            // SAFETY: non-null packet from libvpx; `frame` is the member for frame packets.
            unsafe {
                if (*pkt).kind == vpx::vpx_codec_cx_pkt_kind::VPX_CODEC_CX_FRAME_PKT {
                    let f = (*pkt).data.frame;
                    let len = usize::try_from(f.sz).unwrap_or(0);
                    let data = if f.buf.is_null() {
                        Vec::new()
                    } else {
                        std::slice::from_raw_parts(f.buf as *const u8, len).to_vec()
                    };
                    if !data.is_empty() {
                        out.push(EncodedFrame {
                            data,
                            key: f.flags & vpx::VPX_FRAME_IS_KEY != 0,
                        });
                    }
                }
            }
        }
        Ok(out)
    }
}

impl Drop for Vp8Encoder {
    fn drop(&mut self) {
        // SAFETY: initialised in the constructor, destroyed once.
        unsafe {
            vpx::vpx_codec_destroy(self.ctx.ptr());
        }
    }
}

/// The picture size a VP8 key frame declares (RFC 6386 §9.1), or `None` for an
/// inter frame; an error if it is too short to say.
pub fn key_frame_size(data: &[u8]) -> Result<Option<(u32, u32)>, MediaError> {
    let bad = |reason| MediaError::Malformed {
        kind: "VP8",
        reason,
    };
    let first = *data.first().ok_or(bad("empty frame"))?;
    if first & 1 != 0 {
        return Ok(None);
    }
    if data.len() < 10 {
        return Err(bad("key frame header cut short"));
    }
    if data[3..6] != [0x9d, 0x01, 0x2a] {
        return Err(bad("key frame without its start code"));
    }
    let width = u32::from(u16::from_le_bytes([data[6], data[7]]) & 0x3fff);
    let height = u32::from(u16::from_le_bytes([data[8], data[9]]) & 0x3fff);
    Ok(Some((width, height)))
}

/// A VP8 decoder for one stream.
pub struct Vp8Decoder {
    /// Initialised (the constructor fails otherwise); destroyed in `Drop`.
    ctx: Context,
    /// A key frame has been decoded: inter frames before one are refused.
    keyed: bool,
}

// SAFETY: as for the encoder.
unsafe impl Send for Vp8Decoder {}

impl Vp8Decoder {
    /// A decoder waiting for its first key frame.
    pub fn new() -> Result<Vp8Decoder, MediaError> {
        let cfg = vpx::vpx_codec_dec_cfg_t {
            threads: 1,
            w: 0,
            h: 0,
        };
        let mut ctx = Context::new();
        // SAFETY: a zeroed context to initialise, and the ABI version of these bindings.
        check("decoder start", unsafe {
            vpx::vpx_codec_dec_init_ver(
                ctx.ptr(),
                vpx::vpx_codec_vp8_dx(),
                &cfg,
                0,
                vpx::VPX_DECODER_ABI_VERSION as c_int,
            )
        })?;
        Ok(Vp8Decoder { ctx, keyed: false })
    }

    /// Decodes one frame as it came off the network. A key frame declaring a size
    /// beyond [`MAX_WIDTH`]×[`MAX_HEIGHT`], or an inter frame before any key frame, is
    /// refused before libvpx sees it; a frame libvpx cannot decode is an error (ask
    /// the peer for a key frame).
    pub fn decode(&mut self, data: &[u8]) -> Result<Option<I420Frame>, MediaError> {
        match key_frame_size(data)? {
            Some((w, h)) if w == 0 || h == 0 || w > MAX_WIDTH || h > MAX_HEIGHT => {
                return Err(MediaError::Refused {
                    kind: "VP8",
                    reason: "key frame of a size we do not decode",
                });
            }
            Some(_) => {}
            None if !self.keyed => {
                return Err(MediaError::Refused {
                    kind: "VP8",
                    reason: "inter frame before any key frame",
                });
            }
            None => {}
        }
        let len = c_uint::try_from(data.len()).map_err(|_| MediaError::Malformed {
            kind: "VP8",
            reason: "frame too large",
        })?;
        // SAFETY: an initialised context and a live buffer of `len` bytes.
        let err = unsafe {
            vpx::vpx_codec_decode(self.ctx.ptr(), data.as_ptr(), len, std::ptr::null_mut(), 0)
        };
        if err != vpx::vpx_codec_err_t::VPX_CODEC_OK {
            return Err(codec_error("decoding", err));
        }
        if key_frame_size(data)?.is_some() {
            self.keyed = true;
        }
        let mut iter = std::ptr::null();
        let mut last = None;
        loop {
            // SAFETY: the frames of the data just decoded, valid until the next call.
            let img = unsafe { vpx::vpx_codec_get_frame(self.ctx.ptr(), &mut iter) };
            if img.is_null() {
                break;
            }
            // SAFETY: non-null image from libvpx, read before the next call.
            last = Some(unsafe { copy_image(&*img)? });
        }
        Ok(last)
    }
}

/// A packed copy of a decoded image (I420, 8 bits).
///
/// # Safety
/// `img` must be an image libvpx just returned, its planes valid for its strides
/// and display size.
unsafe fn copy_image(img: &vpx::vpx_image_t) -> Result<I420Frame, MediaError> {
    let refuse = |reason| MediaError::Refused {
        kind: "VP8",
        reason,
    };
    if img.fmt != vpx::vpx_img_fmt::VPX_IMG_FMT_I420 {
        return Err(refuse("decoded picture not in I420"));
    }
    let mut frame = I420Frame::black(img.d_w, img.d_h)?;
    let (w, h) = (img.d_w as usize, img.d_h as usize);
    let (cw, ch) = (frame.chroma_width(), frame.chroma_height());
    let (py, pu, pv) = frame.planes_mut();
    for (plane, dst, width, rows) in [(0, py, w, h), (1, pu, cw, ch), (2, pv, cw, ch)] {
        let stride = img.stride[plane];
        let src = img.planes[plane];
        if src.is_null() || stride < 0 || (stride as usize) < width {
            return Err(refuse("decoded picture with an unusable plane"));
        }
        for row in 0..rows {
            // SAFETY: libvpx's plane holds `rows` rows of `stride` bytes, each at
            // least `width` wide (checked above).
            let line = unsafe { std::slice::from_raw_parts(src.add(row * stride as usize), width) };
            dst[row * width..(row + 1) * width].copy_from_slice(line);
        }
    }
    Ok(frame)
}

impl Drop for Vp8Decoder {
    fn drop(&mut self) {
        // SAFETY: initialised in the constructor, destroyed once.
        unsafe {
            vpx::vpx_codec_destroy(self.ctx.ptr());
        }
    }
}
