//! BGRX pixels (what an X server with a 24-bit visual hands out) to I420, scaled to the
//! size a call sends, with the cursor drawn in. One pass, nearest-neighbour sampling:
//! a screen is mostly text and flat areas, where that keeps edges sharp.

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
            .map(|h| h * self.stride + row);
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

fn luma(r: i32, g: i32, b: i32) -> u8 {
    (((66 * r + 129 * g + 25 * b + 128) >> 8) + 16).clamp(0, 255) as u8
}

/// `src` scaled to `out`'s size and converted (BT.601, studio range).
pub fn bgrx_to_i420(src: &Bgrx<'_>, out: &mut I420Frame) -> Result<(), MediaError> {
    src.check()?;
    let (ow, oh) = (out.width(), out.height());
    let (sw, sh) = (src.width, src.height);
    // Source column and row of each output column and row.
    let xs: Vec<u32> = (0..ow)
        .map(|x| (u64::from(x) * u64::from(sw) / u64::from(ow)) as u32)
        .collect();
    let ys: Vec<u32> = (0..oh)
        .map(|y| (u64::from(y) * u64::from(sh) / u64::from(oh)) as u32)
        .collect();
    // Source byte offsets of each sampled column, and of each sampled row.
    let xo: Vec<usize> = xs.iter().map(|&x| x as usize * 4).collect();
    let yo: Vec<usize> = ys.iter().map(|&y| y as usize * src.stride).collect();
    let (ow, cw) = (ow as usize, out.chroma_width());
    let (yp, up, vp) = out.planes_mut();
    let data = src.data;
    // One 2×2 block at a time: each sampled pixel is read once, for its luma and the
    // block's chroma (the mean of the block).
    for (cy, rows) in yo.chunks(2).enumerate() {
        for (cx, cols) in xo.chunks(2).enumerate() {
            let (mut r, mut g, mut b, mut n) = (0i32, 0i32, 0i32, 0i32);
            for (dy, &row) in rows.iter().enumerate() {
                let line = (cy * 2 + dy) * ow;
                for (dx, &col) in cols.iter().enumerate() {
                    let at = row + col;
                    let Some(px) = data.get(at..at + 3) else {
                        continue;
                    };
                    let (pb, pg, pr) = (i32::from(px[0]), i32::from(px[1]), i32::from(px[2]));
                    yp[line + cx * 2 + dx] = luma(pr, pg, pb);
                    r += pr;
                    g += pg;
                    b += pb;
                    n += 1;
                }
            }
            let n = n.max(1);
            let (r, g, b) = (r / n, g / n, b / n);
            let u = ((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128;
            let v = ((112 * r - 94 * g - 18 * b + 128) >> 8) + 128;
            up[cy * cw + cx] = u.clamp(0, 255) as u8;
            vp[cy * cw + cx] = v.clamp(0, 255) as u8;
        }
    }
    Ok(())
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
