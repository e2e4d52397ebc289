//! BGRX pixels (what an X server with a 24-bit visual hands out) to I420, scaled to the
//! size a call sends, with the cursor drawn in.

use crate::MediaError;
use crate::video::I420Frame;

/// A captured picture: `width`×`height` pixels of 4 bytes (B, G, R, unused), rows
/// `stride` bytes apart.
#[derive(Debug, Clone, Copy)]
pub struct Bgrx<'a> {
    /// The pixels.
    pub data: &'a [u8],
    /// Pixels per row.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// Bytes from one row to the next.
    pub stride: usize,
}

impl Bgrx<'_> {
    /// Checks that the buffer holds what the dimensions claim.
    fn check(&self) -> Result<(), MediaError> {
        let row = self.width as usize * 4;
        let needed = (self.height as usize)
            .checked_sub(1)
            .and_then(|h| h.checked_mul(self.stride))
            .and_then(|n| n.checked_add(row));
        match needed {
            Some(n) if self.width > 0 && self.stride >= row && self.data.len() >= n => Ok(()),
            _ => Err(MediaError::InvalidInput(format!(
                "a {}x{} picture in {} bytes with rows of {}",
                self.width,
                self.height,
                self.data.len(),
                self.stride
            ))),
        }
    }
}

/// The largest even size within `max` that keeps `(width, height)`'s shape (never
/// larger than the source, at least 16×16).
pub fn fit(width: u32, height: u32, max: (u32, u32)) -> (u32, u32) {
    let (mw, mh) = (max.0.max(16), max.1.max(16));
    let (w, h) = (u64::from(width.max(1)), u64::from(height.max(1)));
    // Scale by the tighter of the two limits, never up.
    let (num, den) = if w * u64::from(mh) > h * u64::from(mw) {
        (u64::from(mw), w)
    } else {
        (u64::from(mh), h)
    };
    let (num, den) = if num >= den { (1, 1) } else { (num, den) };
    let even = |v: u64| ((v * num / den) as u32 & !1).max(16);
    (even(w), even(h))
}

/// Converts captured screens to I420, keeping the buffer a scaled picture is sampled
/// into from one picture to the next (a 1280×720 one is 3.7 MB).
#[derive(Debug, Default)]
pub struct BgrxConverter {
    scaled: Vec<u8>,
}

impl BgrxConverter {
    /// `src` scaled to `out`'s size (nearest neighbour: a screen is mostly text and
    /// flat areas, where that keeps edges sharp) and converted (BT.601, studio range)
    /// by the `yuv` crate's SIMD code.
    pub fn convert(&mut self, src: &Bgrx<'_>, out: &mut I420Frame) -> Result<(), MediaError> {
        src.check()?;
        let (ow, oh) = (out.width(), out.height());
        if (src.width, src.height) == (ow, oh) {
            let row = ow as usize * 4;
            let whole = row * oh as usize;
            // Handed over as exactly the rows of the picture, packed: the converter
            // takes rows in pairs from the whole buffer, so padding or bytes past the
            // last row would shift or drop rows.
            if src.stride == row && src.data.len() >= whole {
                return to_planes(&src.data[..whole], row, out);
            }
            self.scaled.resize(whole, 0);
            for (y, line) in self.scaled.chunks_exact_mut(row).enumerate() {
                let at = y * src.stride;
                if let Some(from) = src.data.get(at..at + row) {
                    line.copy_from_slice(from);
                }
            }
            return to_planes(&self.scaled, row, out);
        }
        let (sw, sh) = (src.width, src.height);
        let row = ow as usize * 4;
        self.scaled.resize(row * oh as usize, 0);
        // Source byte offset of each output column.
        let cols: Vec<usize> = (0..u64::from(ow))
            .map(|x| (x * u64::from(sw) / u64::from(ow)) as usize * 4)
            .collect();
        for (y, line) in self.scaled.chunks_exact_mut(row).enumerate() {
            let sy = (y as u64 * u64::from(sh) / u64::from(oh)) as usize;
            // Within the buffer: `check` proved every row up to `height` is there.
            let Some(from) = src
                .data
                .get(sy * src.stride..sy * src.stride + sw as usize * 4)
            else {
                continue;
            };
            for (px, &at) in line.chunks_exact_mut(4).zip(&cols) {
                if let Some(p) = from.get(at..at + 4) {
                    px.copy_from_slice(p);
                }
            }
        }
        to_planes(&self.scaled, row, out)
    }
}

/// `data` (BGRX of `out`'s size, rows `stride` bytes apart) into `out`'s planes.
fn to_planes(data: &[u8], stride: usize, out: &mut I420Frame) -> Result<(), MediaError> {
    let (w, h) = (out.width(), out.height());
    let cw = out.chroma_width() as u32;
    let (y, u, v) = out.planes_mut();
    let mut planes = yuv::YuvPlanarImageMut {
        y_plane: yuv::BufferStoreMut::Borrowed(y),
        y_stride: w,
        u_plane: yuv::BufferStoreMut::Borrowed(u),
        u_stride: cw,
        v_plane: yuv::BufferStoreMut::Borrowed(v),
        v_stride: cw,
        width: w,
        height: h,
    };
    let stride = u32::try_from(stride)
        .map_err(|_| MediaError::InvalidInput("a screen row longer than 4 GB".into()))?;
    yuv::bgra_to_yuv420(
        &mut planes,
        data,
        stride,
        yuv::YuvRange::Limited,
        yuv::YuvStandardMatrix::Bt601,
        yuv::YuvConversionMode::Balanced,
    )
    .map_err(|e| MediaError::InvalidInput(format!("screen conversion: {e}")))
}

/// [`BgrxConverter::convert`] once (a new sampling buffer each time).
pub fn bgrx_to_i420(src: &Bgrx<'_>, out: &mut I420Frame) -> Result<(), MediaError> {
    BgrxConverter::default().convert(src, out)
}

/// Draws a cursor (ARGB, premultiplied, as XFixes gives it) into BGRX pixels with its
/// top-left corner at (`x`, `y`), clipped to the picture.
pub fn draw_cursor(
    dst: &mut [u8],
    width: u32,
    height: u32,
    stride: usize,
    cursor: &[u32],
    (cw, ch): (u32, u32),
    (x, y): (i32, i32),
) {
    if cursor.len() < cw as usize * ch as usize {
        return;
    }
    for cy in 0..ch {
        let py = y + cy as i32;
        if py < 0 || py >= height as i32 {
            continue;
        }
        for cx in 0..cw {
            let px = x + cx as i32;
            if px < 0 || px >= width as i32 {
                continue;
            }
            let argb = cursor[(cy * cw + cx) as usize];
            let a = argb >> 24;
            if a == 0 {
                continue;
            }
            let at = py as usize * stride + px as usize * 4;
            let Some(p) = dst.get_mut(at..at + 3) else {
                continue;
            };
            for (i, shift) in [(0usize, 0u32), (1, 8), (2, 16)] {
                let s = (argb >> shift) & 0xff;
                let d = u32::from(p[i]);
                p[i] = (s + d * (255 - a) / 255).min(255) as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::TestPattern;

    /// The pattern as BGRX (what a screen would show).
    fn pattern_bgrx(w: u32, h: u32) -> Vec<u8> {
        TestPattern::new(w, h, 15)
            .expect("pattern")
            .frame(3)
            .to_bgrx()
    }

    #[test]
    fn a_screen_showing_the_pattern_converts_and_scales_to_the_pattern() {
        let (w, h) = (1280, 720);
        let data = pattern_bgrx(w, h);
        let src = Bgrx {
            data: &data,
            width: w,
            height: h,
            stride: w as usize * 4,
        };
        for size in [(1280, 720), (640, 360), (320, 180)] {
            let mut out = I420Frame::black(size.0, size.1).expect("frame");
            bgrx_to_i420(&src, &mut out).expect("convert");
            assert!(TestPattern::shows_bars(&out, 24), "{size:?}");
            let marker = TestPattern::find_marker(&out).expect("marker");
            let want = TestPattern::marker_x(size.0, size.1, 3);
            assert!(marker.abs_diff(want) <= 4, "{size:?}: {marker} vs {want}");
        }
    }

    #[test]
    fn odd_heights_padded_rows_and_spare_bytes_convert_every_row() {
        // A 16×15 picture (odd height) with a 17th row of spare bytes, and a 16×16
        // one with rows padded to 80 bytes and no spare bytes: every row comes out.
        for (h, stride, rows_of_data) in [(15u32, 64usize, 17usize), (16, 80, 16)] {
            let mut data = vec![0u8; stride * rows_of_data];
            // White everywhere in the picture; the padding and spare rows black.
            for y in 0..h as usize {
                data[y * stride..y * stride + 64].fill(255);
            }
            let data =
                &data[..stride * (h as usize - 1) + 64 + (rows_of_data - h as usize) * stride];
            let src = Bgrx {
                data,
                width: 16,
                height: h,
                stride,
            };
            let mut out = I420Frame::black(16, h).expect("frame");
            bgrx_to_i420(&src, &mut out).expect("convert");
            let (y, _, _) = out.planes();
            assert!(
                y.iter().all(|&l| l >= 230),
                "{h} rows, stride {stride}: {y:?}"
            );
        }
        // A stride whose arithmetic overflows is refused, not wrapped.
        let src = Bgrx {
            data: &[0u8; 64],
            width: 2,
            height: 3,
            stride: usize::MAX / 2,
        };
        let mut out = I420Frame::black(2, 2).expect("frame");
        assert!(bgrx_to_i420(&src, &mut out).is_err());
    }

    #[test]
    fn sizes_fit_the_limit_keep_the_shape_and_are_even() {
        assert_eq!(fit(1920, 1080, (1280, 720)), (1280, 720));
        assert_eq!(fit(1920, 1200, (1280, 720)), (1152, 720));
        assert_eq!(fit(1025, 769, (4000, 4000)), (1024, 768));
        assert_eq!(fit(640, 480, (1280, 720)), (640, 480));
        assert_eq!(fit(1, 1, (1280, 720)), (16, 16));
    }

    #[test]
    fn a_buffer_shorter_than_its_dimensions_is_refused() {
        let data = vec![0u8; 100];
        let src = Bgrx {
            data: &data,
            width: 10,
            height: 10,
            stride: 40,
        };
        let mut out = I420Frame::black(16, 16).expect("frame");
        assert!(bgrx_to_i420(&src, &mut out).is_err());
        let src = Bgrx { stride: 8, ..src };
        assert!(bgrx_to_i420(&src, &mut out).is_err());
    }

    #[test]
    fn the_cursor_is_blended_and_clipped() {
        let (w, h) = (8u32, 8u32);
        let mut px = vec![0u8; 8 * 8 * 4];
        // An opaque white 2×2 cursor and a half-transparent one, half off the picture.
        draw_cursor(&mut px, w, h, 32, &[0xffff_ffff; 4], (2, 2), (1, 1));
        assert_eq!(&px[(9 * 4)..(9 * 4 + 3)], &[255, 255, 255]);
        draw_cursor(&mut px, w, h, 32, &[0x8080_8080; 4], (2, 2), (7, 7));
        assert_eq!(&px[(63 * 4)..(63 * 4 + 3)], &[128, 128, 128]);
        draw_cursor(&mut px, w, h, 32, &[0xffff_ffff; 4], (2, 2), (-5, 100));
    }
}
