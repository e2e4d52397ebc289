//! A camera's pictures, in the layouts cameras give them, into I420. Every layout is
//! read through bounds-checked slices: a driver that reports a short buffer or a row
//! stride too small for the width gets an error, never a read past its buffer.

use crate::MediaError;
use crate::video::I420Frame;

/// The picture layouts we read (V4L2 four-character codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelLayout {
    /// `YU12`: planar Y, U, V (what we send; no conversion).
    I420,
    /// `YV12`: planar Y, V, U.
    Yv12,
    /// `NV12`: planar Y, then U and V interleaved at half size.
    Nv12,
    /// `YUYV` (YUY2): packed 4:2:2, the format nearly every USB camera offers.
    Yuyv,
    /// `UYVY`: packed 4:2:2, chroma first.
    Uyvy,
}

impl PixelLayout {
    /// In the order we prefer them: the fewest bytes to touch first.
    pub const PREFERRED: [PixelLayout; 5] = [
        PixelLayout::I420,
        PixelLayout::Nv12,
        PixelLayout::Yv12,
        PixelLayout::Yuyv,
        PixelLayout::Uyvy,
    ];

    /// The V4L2 code.
    pub fn fourcc(self) -> u32 {
        fourcc(match self {
            PixelLayout::I420 => b"YU12",
            PixelLayout::Yv12 => b"YV12",
            PixelLayout::Nv12 => b"NV12",
            PixelLayout::Yuyv => b"YUYV",
            PixelLayout::Uyvy => b"UYVY",
        })
    }

    /// The layout a V4L2 code names, if we read it.
    pub fn from_fourcc(code: u32) -> Option<PixelLayout> {
        PixelLayout::PREFERRED
            .into_iter()
            .find(|l| l.fourcc() == code)
    }

    /// Bytes of one row of luma (packed: of the whole row) at the least.
    pub fn min_stride(self, width: usize) -> usize {
        match self {
            PixelLayout::Yuyv | PixelLayout::Uyvy => 2 * width.div_ceil(2) * 2,
            _ => width,
        }
    }

    /// Bytes a picture of `height` rows `stride` apart takes (V4L2's layout: chroma
    /// rows half the luma stride, or the same for NV12's interleaved plane); `None`
    /// if that does not fit in memory.
    pub fn picture_bytes(self, stride: usize, height: usize) -> Option<usize> {
        let luma = stride.checked_mul(height)?;
        let ch = height.div_ceil(2);
        let chroma = match self {
            PixelLayout::I420 | PixelLayout::Yv12 => {
                (stride / 2).checked_mul(ch)?.checked_mul(2)?
            }
            PixelLayout::Nv12 => stride.checked_mul(ch)?,
            PixelLayout::Yuyv | PixelLayout::Uyvy => 0,
        };
        luma.checked_add(chroma)
    }
}

/// A V4L2 four-character code.
pub fn fourcc(code: &[u8; 4]) -> u32 {
    u32::from_le_bytes(*code)
}

/// A V4L2 code as text, for messages (`MJPG`, `H264`); unprintable bytes as `?`.
pub fn fourcc_text(code: u32) -> String {
    code.to_le_bytes()
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '?'
            }
        })
        .collect::<String>()
        .trim_end()
        .to_string()
}

/// Where a captured picture's bytes are and how they are laid out.
#[derive(Debug, Clone, Copy)]
pub struct Captured<'a> {
    /// The buffer, as many bytes as the driver says it filled.
    pub data: &'a [u8],
    /// Width and height.
    pub size: (u32, u32),
    /// Bytes from one row to the next (of the luma plane, or of the packed picture).
    pub stride: usize,
    /// How the bytes are laid out.
    pub layout: PixelLayout,
}

fn short(what: &str) -> MediaError {
    MediaError::Camera(format!(
        "the camera gave a picture too short for its {what}"
    ))
}

/// The `rows` rows of `width` bytes starting at `start`, `stride` apart.
fn plane(
    data: &[u8],
    start: usize,
    stride: usize,
    width: usize,
    rows: usize,
) -> Result<&[u8], MediaError> {
    if rows == 0 {
        return Ok(&[]);
    }
    let end = (rows - 1)
        .checked_mul(stride)
        .and_then(|n| n.checked_add(start))
        .and_then(|n| n.checked_add(width))
        .ok_or_else(|| short("size"))?;
    data.get(start..end).ok_or_else(|| short("planes"))
}

/// Copies `rows` rows of `width` bytes, `stride` apart in `from`, packed into `to`.
fn copy_rows(from: &[u8], stride: usize, width: usize, to: &mut [u8]) {
    for (row, out) in to.chunks_exact_mut(width).enumerate() {
        let at = row * stride;
        if let Some(src) = from.get(at..at + width) {
            out.copy_from_slice(src);
        }
    }
}

/// The picture as I420.
pub fn to_i420(c: &Captured<'_>) -> Result<I420Frame, MediaError> {
    let (width, height) = c.size;
    let mut frame = I420Frame::black(width, height)?;
    let (w, h) = (width as usize, height as usize);
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    if c.stride < c.layout.min_stride(w) {
        return Err(MediaError::Camera(format!(
            "the camera's rows ({} bytes) are too short for its width ({width})",
            c.stride
        )));
    }
    // Odd sizes have no single chroma layout drivers agree on: refused (the camera is
    // asked for even sizes).
    if w % 2 != 0 || h % 2 != 0 {
        return Err(MediaError::Camera(format!(
            "a {width}x{height} picture: only even sizes are read"
        )));
    }
    let needed = c
        .layout
        .picture_bytes(c.stride, h)
        .ok_or_else(|| short("size"))?;
    if c.data.len() < needed {
        return Err(short("layout"));
    }
    let luma_bytes = c.stride * h;
    let (y, u, v) = frame.planes_mut();
    match c.layout {
        PixelLayout::I420 | PixelLayout::Yv12 => {
            // Chroma rows are half the luma stride (V4L2's rule for these layouts).
            let cstride = c.stride / 2;
            if cstride < cw {
                return Err(short("chroma rows"));
            }
            let first = luma_bytes;
            let second = first + cstride * ch;
            copy_rows(plane(c.data, 0, c.stride, w, h)?, c.stride, w, y);
            let a = plane(c.data, first, cstride, cw, ch)?;
            let b = plane(c.data, second, cstride, cw, ch)?;
            let (a_to, b_to) = if c.layout == PixelLayout::I420 {
                (u, v)
            } else {
                (v, u)
            };
            copy_rows(a, cstride, cw, a_to);
            copy_rows(b, cstride, cw, b_to);
        }
        PixelLayout::Nv12 => {
            copy_rows(plane(c.data, 0, c.stride, w, h)?, c.stride, w, y);
            let uv = plane(c.data, luma_bytes, c.stride, 2 * cw, ch)?;
            for row in 0..ch {
                let src = &uv[row * c.stride..row * c.stride + 2 * cw];
                let (u_row, v_row) = (
                    &mut u[row * cw..(row + 1) * cw],
                    &mut v[row * cw..(row + 1) * cw],
                );
                for (i, pair) in src.chunks_exact(2).enumerate() {
                    u_row[i] = pair[0];
                    v_row[i] = pair[1];
                }
            }
        }
        PixelLayout::Yuyv | PixelLayout::Uyvy => {
            let row_bytes = c.layout.min_stride(w);
            let packed = plane(c.data, 0, c.stride, row_bytes, h)?;
            // Byte offsets of Y0, U, Y1, V within each 4-byte group.
            let (y0, cb, y1, cr) = if c.layout == PixelLayout::Yuyv {
                (0, 1, 2, 3)
            } else {
                (1, 0, 3, 2)
            };
            for row in 0..h {
                let src = &packed[row * c.stride..row * c.stride + row_bytes];
                let out = &mut y[row * w..(row + 1) * w];
                for (i, g) in src.chunks_exact(4).enumerate() {
                    out[2 * i] = g[y0];
                    if let Some(o) = out.get_mut(2 * i + 1) {
                        *o = g[y1];
                    }
                }
            }
            // 4:2:2 to 4:2:0: the chroma of two rows averaged (the last row alone when
            // the height is odd).
            for crow in 0..ch {
                let top = 2 * crow * c.stride;
                let bottom = if 2 * crow + 1 < h {
                    (2 * crow + 1) * c.stride
                } else {
                    top
                };
                let (t, b) = (
                    &packed[top..top + row_bytes],
                    &packed[bottom..bottom + row_bytes],
                );
                for i in 0..cw {
                    let g = 4 * i;
                    u[crow * cw + i] =
                        (u16::from(t[g + cb]) + u16::from(b[g + cb])).div_ceil(2) as u8;
                    v[crow * cw + i] =
                        (u16::from(t[g + cr]) + u16::from(b[g + cr])).div_ceil(2) as u8;
                }
            }
        }
    }
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 6×4 picture whose every pixel is distinct: Y = 10·row + col, U and V from the
    /// chroma position.
    fn expected(w: usize, h: usize) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let y = (0..h)
            .flat_map(|r| (0..w).map(move |c| (10 * r + c) as u8))
            .collect();
        let u = (0..ch)
            .flat_map(|r| (0..cw).map(move |c| (100 + 10 * r + c) as u8))
            .collect();
        let v = (0..ch)
            .flat_map(|r| (0..cw).map(move |c| (200 + 10 * r + c) as u8))
            .collect();
        (y, u, v)
    }

    fn check(frame: &I420Frame, w: usize, h: usize) {
        let (y, u, v) = expected(w, h);
        let (fy, fu, fv) = frame.planes();
        assert_eq!((fy, fu, fv), (&y[..], &u[..], &v[..]));
    }

    #[test]
    fn planar_layouts_with_padded_rows_come_out_as_i420() {
        let (w, h, stride) = (6usize, 4usize, 8usize);
        let (y, u, v) = expected(w, h);
        let mut planar = vec![0xEE; stride * h];
        for r in 0..h {
            planar[r * stride..r * stride + w].copy_from_slice(&y[r * w..(r + 1) * w]);
        }
        let chroma = |p: &[u8]| {
            let mut out = vec![0xEE; stride / 2 * 2];
            for r in 0..2 {
                out[r * 4..r * 4 + 3].copy_from_slice(&p[r * 3..r * 3 + 3]);
            }
            out
        };
        let i420: Vec<u8> = [planar.clone(), chroma(&u), chroma(&v)].concat();
        let yv12: Vec<u8> = [planar.clone(), chroma(&v), chroma(&u)].concat();
        let mut nv12 = planar.clone();
        for r in 0..2 {
            let mut row = vec![0xEE; stride];
            for c in 0..3 {
                row[2 * c] = u[r * 3 + c];
                row[2 * c + 1] = v[r * 3 + c];
            }
            nv12.extend(row);
        }
        for (data, layout) in [
            (&i420, PixelLayout::I420),
            (&yv12, PixelLayout::Yv12),
            (&nv12, PixelLayout::Nv12),
        ] {
            let c = Captured {
                data,
                size: (w as u32, h as u32),
                stride,
                layout,
            };
            check(&to_i420(&c).expect("converts"), w, h);
        }
    }

    #[test]
    fn packed_422_is_subsampled_by_averaging_two_rows() {
        let (w, h) = (4usize, 4usize);
        let mut yuyv = Vec::new();
        let mut uyvy = Vec::new();
        for r in 0..h {
            for pair in 0..2 {
                let (y0, y1) = ((10 * r + 2 * pair) as u8, (10 * r + 2 * pair + 1) as u8);
                let (cb, cr) = ((100 + 20 * r + pair) as u8, (200 - 20 * r - pair) as u8);
                yuyv.extend([y0, cb, y1, cr]);
                uyvy.extend([cb, y0, cr, y1]);
            }
        }
        for (data, layout) in [(&yuyv, PixelLayout::Yuyv), (&uyvy, PixelLayout::Uyvy)] {
            let f = to_i420(&Captured {
                data,
                size: (w as u32, h as u32),
                stride: 8,
                layout,
            })
            .expect("converts");
            let (y, u, v) = f.planes();
            assert_eq!(
                y,
                &[0, 1, 2, 3, 10, 11, 12, 13, 20, 21, 22, 23, 30, 31, 32, 33]
            );
            // Rows 0 and 1 averaged, then rows 2 and 3.
            assert_eq!(u, &[110, 111, 150, 151]);
            assert_eq!(v, &[190, 189, 150, 149]);
        }
    }

    #[test]
    fn a_short_buffer_odd_size_or_narrow_stride_is_an_error_not_a_panic() {
        let data = vec![0u8; 100];
        for layout in PixelLayout::PREFERRED {
            for (size, stride) in [
                ((16, 16), 16),
                ((16, 2), 4),
                ((3840, 2160), 7680),
                ((8, 8), usize::MAX),
                ((8, 2), usize::MAX),
                ((8, 2), usize::MAX / 2),
                ((5, 2), 16),
                ((4, 3), 16),
            ] {
                let c = Captured {
                    data: &data,
                    size,
                    stride,
                    layout,
                };
                assert!(to_i420(&c).is_err(), "{layout:?} {size:?} {stride}");
            }
        }
        assert!(
            to_i420(&Captured {
                data: &data,
                size: (0, 0),
                stride: 0,
                layout: PixelLayout::I420
            })
            .is_err()
        );
    }

    #[test]
    fn four_character_codes_round_trip_and_unknown_ones_are_printable() {
        for l in PixelLayout::PREFERRED {
            assert_eq!(PixelLayout::from_fourcc(l.fourcc()), Some(l));
        }
        assert_eq!(PixelLayout::from_fourcc(fourcc(b"MJPG")), None);
        assert_eq!(fourcc_text(fourcc(b"MJPG")), "MJPG");
        assert_eq!(fourcc_text(0x0000_0141), "A???");
    }
}
