//! One picture in I420 (the planar 4:2:0 layout VP8 codes): Y at full size, then U
//! and V at half size each way, rounded up, every row packed.

use super::{MAX_HEIGHT, MAX_WIDTH};
use crate::MediaError;

/// A picture in I420, its three planes in one buffer.
#[derive(Clone, PartialEq, Eq)]
pub struct I420Frame {
    width: u32,
    height: u32,
    data: Vec<u8>,
}

impl std::fmt::Debug for I420Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "I420Frame({}x{})", self.width, self.height)
    }
}

/// Bytes of a `width`×`height` I420 picture, if the size is one we handle.
pub fn i420_size(width: u32, height: u32) -> Result<usize, MediaError> {
    if width == 0 || height == 0 || width > MAX_WIDTH || height > MAX_HEIGHT {
        return Err(MediaError::InvalidInput(format!(
            "a {width}x{height} picture: sizes from 1x1 to {MAX_WIDTH}x{MAX_HEIGHT} are handled"
        )));
    }
    let (w, h) = (width as usize, height as usize);
    Ok(w * h + 2 * w.div_ceil(2) * h.div_ceil(2))
}

impl I420Frame {
    /// A black picture.
    pub fn black(width: u32, height: u32) -> Result<I420Frame, MediaError> {
        let size = i420_size(width, height)?;
        let luma = width as usize * height as usize;
        let mut data = vec![128u8; size];
        data[..luma].fill(16);
        Ok(I420Frame {
            width,
            height,
            data,
        })
    }

    /// A picture from its planes packed one after the other (Y, U, V).
    pub fn from_bytes(width: u32, height: u32, data: Vec<u8>) -> Result<I420Frame, MediaError> {
        let size = i420_size(width, height)?;
        if data.len() != size {
            return Err(MediaError::InvalidInput(format!(
                "a {width}x{height} I420 picture is {size} bytes, not {}",
                data.len()
            )));
        }
        Ok(I420Frame {
            width,
            height,
            data,
        })
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Width of the U and V planes.
    pub fn chroma_width(&self) -> usize {
        (self.width as usize).div_ceil(2)
    }

    /// Height of the U and V planes.
    pub fn chroma_height(&self) -> usize {
        (self.height as usize).div_ceil(2)
    }

    /// The three planes packed (Y, U, V).
    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }

    fn luma_len(&self) -> usize {
        self.width as usize * self.height as usize
    }

    fn chroma_len(&self) -> usize {
        self.chroma_width() * self.chroma_height()
    }

    /// The planes, to read: (Y, U, V).
    pub fn planes(&self) -> (&[u8], &[u8], &[u8]) {
        let (y, rest) = self.data.split_at(self.luma_len());
        let (u, v) = rest.split_at(self.chroma_len());
        (y, u, v)
    }

    /// The planes, to write: (Y, U, V).
    pub fn planes_mut(&mut self) -> (&mut [u8], &mut [u8], &mut [u8]) {
        let (luma, chroma) = (self.luma_len(), self.chroma_len());
        let (y, rest) = self.data.split_at_mut(luma);
        let (u, v) = rest.split_at_mut(chroma);
        (y, u, v)
    }

    /// The picture as BGRX pixels (BT.601, studio range), as an X11 screen holds it:
    /// what a test draws on a virtual screen to share.
    pub fn to_bgrx(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.width as usize * self.height as usize * 4);
        for y in 0..self.height {
            for x in 0..self.width {
                let (yy, u, v) = self.pixel(x, y).unwrap_or((16, 128, 128));
                let c = 298 * (i32::from(yy) - 16);
                let (d, e) = (i32::from(u) - 128, i32::from(v) - 128);
                let r = ((c + 409 * e + 128) >> 8).clamp(0, 255) as u8;
                let g = ((c - 100 * d - 208 * e + 128) >> 8).clamp(0, 255) as u8;
                let b = ((c + 516 * d + 128) >> 8).clamp(0, 255) as u8;
                out.extend_from_slice(&[b, g, r, 0]);
            }
        }
        out
    }

    /// This picture in a `width`×`height` one, scaled (nearest neighbour) to fit
    /// with its shape kept and centred, black around it: a camera that gives another
    /// size than the call sends.
    pub fn fitted_into(&self, width: u32, height: u32) -> Result<I420Frame, MediaError> {
        let mut out = I420Frame::black(width, height)?;
        if (width, height) == (self.width, self.height) {
            out.data.copy_from_slice(&self.data);
            return Ok(out);
        }
        // The largest rectangle of this shape inside, in even numbers.
        let (sw, sh) = (u64::from(self.width), u64::from(self.height));
        let (w, h) = (u64::from(width), u64::from(height));
        let (fw, fh) = if sw * h > sh * w {
            (w, (sh * w / sw).max(1))
        } else {
            ((sw * h / sh).max(1), h)
        };
        let (fw, fh) = (
            (fw as u32 & !1).max(2).min(width),
            (fh as u32 & !1).max(2).min(height),
        );
        let (x0, y0) = (((width - fw) / 2) & !1, ((height - fh) / 2) & !1);
        let (src_cw, dst_cw) = (self.chroma_width(), out.chroma_width());
        let (sy, su, sv) = self.planes();
        let (dy, du, dv) = out.planes_mut();
        for y in 0..fh {
            let from_y = (u64::from(y) * sh / u64::from(fh)) as usize;
            for x in 0..fw {
                let from_x = (u64::from(x) * sw / u64::from(fw)) as usize;
                let to = (y0 + y) as usize * width as usize + (x0 + x) as usize;
                dy[to] = sy[from_y * self.width as usize + from_x];
                if x % 2 == 0 && y % 2 == 0 {
                    let c_to = ((y0 + y) / 2) as usize * dst_cw + ((x0 + x) / 2) as usize;
                    let c_from = (from_y / 2) * src_cw + from_x / 2;
                    du[c_to] = su[c_from];
                    dv[c_to] = sv[c_from];
                }
            }
        }
        Ok(out)
    }

    /// The colour at a pixel as (Y, U, V), or `None` outside the picture.
    pub fn pixel(&self, x: u32, y: u32) -> Option<(u8, u8, u8)> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let (py, pu, pv) = self.planes();
        let (x, y) = (x as usize, y as usize);
        let c = (y / 2) * self.chroma_width() + x / 2;
        Some((py[y * self.width as usize + x], pu[c], pv[c]))
    }

    /// The mean (Y, U, V) over a rectangle (clipped to the picture), or `None` if
    /// nothing of it is inside.
    pub fn mean(&self, x: u32, y: u32, w: u32, h: u32) -> Option<(u8, u8, u8)> {
        let (x1, y1) = (
            x.saturating_add(w).min(self.width),
            y.saturating_add(h).min(self.height),
        );
        let (mut sum, mut n) = ([0u64; 3], 0u64);
        for yy in y..y1 {
            for xx in x..x1 {
                if let Some((a, b, c)) = self.pixel(xx, yy) {
                    sum[0] += u64::from(a);
                    sum[1] += u64::from(b);
                    sum[2] += u64::from(c);
                    n += 1;
                }
            }
        }
        (n > 0).then(|| ((sum[0] / n) as u8, (sum[1] / n) as u8, (sum[2] / n) as u8))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_picture_is_fitted_into_another_size_centred_with_black_around() {
        // 4×2: the left half one colour, the right half another.
        let mut p = I420Frame::black(4, 2).expect("frame");
        {
            let (y, u, v) = p.planes_mut();
            y.copy_from_slice(&[200, 200, 100, 100, 200, 200, 100, 100]);
            u.copy_from_slice(&[90, 60]);
            v.copy_from_slice(&[160, 170]);
        }
        // Into 8×8: 8×4 in rows 2 to 5, black above and below.
        let f = p.fitted_into(8, 8).expect("fits");
        assert_eq!(f.pixel(0, 0), Some((16, 128, 128)));
        assert_eq!(f.pixel(0, 2), Some((200, 90, 160)));
        assert_eq!(f.pixel(7, 5), Some((100, 60, 170)));
        assert_eq!(f.pixel(7, 7), Some((16, 128, 128)));
        // Into 2×8 (taller than wide): 2×1 rounded up to 2×2, in rows 2 and 3.
        let f = p.fitted_into(2, 8).expect("fits");
        assert_eq!(f.pixel(0, 0), Some((16, 128, 128)));
        assert_eq!(f.pixel(0, 2), Some((200, 90, 160)));
        assert_eq!(f.pixel(0, 4), Some((16, 128, 128)));
        // Into 8×2 (wider): the 4×2 picture in columns 2 to 5, black beside it.
        let f = p.fitted_into(8, 2).expect("fits");
        assert_eq!(f.pixel(0, 0), Some((16, 128, 128)));
        assert_eq!(f.pixel(2, 0), Some((200, 90, 160)));
        assert_eq!(f.pixel(5, 1), Some((100, 60, 170)));
        assert_eq!(f.pixel(7, 1), Some((16, 128, 128)));
        // The same size is a copy; odd and tiny sizes do not panic.
        assert_eq!(p.fitted_into(4, 2).expect("same"), p);
        for (w, h) in [(1, 1), (3, 5), (5, 3), (3840, 2160)] {
            let f = p.fitted_into(w, h).expect("fits");
            assert_eq!((f.width(), f.height()), (w, h));
        }
        assert!(p.fitted_into(0, 4).is_err());
    }

    #[test]
    fn odd_sizes_round_the_chroma_planes_up() {
        let f = I420Frame::black(5, 3).expect("frame");
        assert_eq!(f.as_bytes().len(), 15 + 2 * 3 * 2);
        let (y, u, v) = f.planes();
        assert_eq!((y.len(), u.len(), v.len()), (15, 6, 6));
        assert_eq!(f.pixel(4, 2), Some((16, 128, 128)));
        assert_eq!(f.pixel(5, 0), None);
    }

    #[test]
    fn sizes_out_of_range_or_wrong_lengths_are_refused() {
        assert!(I420Frame::black(0, 10).is_err());
        assert!(I420Frame::black(MAX_WIDTH + 1, 10).is_err());
        assert!(I420Frame::black(16_383, 16_383).is_err());
        assert!(I420Frame::from_bytes(4, 4, vec![0; 23]).is_err());
        assert!(I420Frame::from_bytes(4, 4, vec![0; 24]).is_ok());
    }
}
