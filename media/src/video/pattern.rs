//! A moving test pattern: eight colour bars over the top three quarters, and a white
//! square sliding along a grey band below them. A receiver can check both by content
//! (the bars' colours, the square's position), not only count frames.

use super::{I420Frame, VideoSource};
use crate::MediaError;

/// The bars' colours (Y, U, V), left to right: white, yellow, cyan, green, magenta,
/// red, blue, black (BT.601, studio range).
pub const BARS: [(u8, u8, u8); 8] = [
    (235, 128, 128),
    (210, 16, 146),
    (170, 166, 16),
    (145, 54, 34),
    (106, 202, 222),
    (81, 90, 240),
    (41, 240, 110),
    (16, 128, 128),
];
/// The band's grey and the marker's white.
const BAND: (u8, u8, u8) = (90, 128, 128);
const MARKER: (u8, u8, u8) = (235, 128, 128);

/// A test pattern source of a given size and rate.
pub struct TestPattern {
    /// A black picture of the pattern's size, drawn over for each frame.
    blank: I420Frame,
    width: u32,
    height: u32,
    fps: u32,
    index: u64,
}

impl TestPattern {
    /// A pattern of `width`×`height` at `fps` frames per second.
    pub fn new(width: u32, height: u32, fps: u32) -> Result<TestPattern, MediaError> {
        let blank = I420Frame::black(width, height)?;
        if width < 32 || height < 32 || fps == 0 {
            return Err(MediaError::InvalidInput(format!(
                "a {width}x{height} test pattern at {fps} fps: at least 32x32 and 1 fps"
            )));
        }
        Ok(TestPattern {
            blank,
            width,
            height,
            fps,
            index: 0,
        })
    }

    /// Side of the marker square.
    pub fn marker_size(height: u32) -> u32 {
        (height / 8).max(4) & !1
    }

    /// Top of the grey band.
    fn band_top(height: u32) -> u32 {
        (height * 3 / 4) & !1
    }

    /// Where the marker's left edge is in frame `index`.
    pub fn marker_x(width: u32, height: u32, index: u64) -> u32 {
        let size = Self::marker_size(height);
        let travel = u64::from(width.saturating_sub(size).max(2));
        let step = u64::from((width / 64).max(2));
        ((index * step) % travel) as u32 & !1
    }

    /// Frame `index` of the pattern.
    pub fn frame(&self, index: u64) -> I420Frame {
        let (w, h) = (self.width, self.height);
        let mut f = self.blank.clone();
        let band = Self::band_top(h);
        let size = Self::marker_size(h);
        let mx = Self::marker_x(w, h, index);
        let my = band + (h - band).saturating_sub(size) / 2;
        let colour = |x: u32, y: u32| {
            if y < band {
                BARS[(x as usize * BARS.len()) / w as usize]
            } else if x >= mx && x < mx + size && y >= my && y < my + size {
                MARKER
            } else {
                BAND
            }
        };
        let cw = f.chroma_width();
        let (py, pu, pv) = f.planes_mut();
        for y in 0..h {
            for x in 0..w {
                let (cy, cu, cv) = colour(x, y);
                py[(y * w + x) as usize] = cy;
                if x % 2 == 0 && y % 2 == 0 {
                    let c = (y as usize / 2) * cw + x as usize / 2;
                    pu[c] = cu;
                    pv[c] = cv;
                }
            }
        }
        f
    }

    /// Whether `frame` shows the bars (each bar's middle within `tolerance` of its
    /// colour in Y, U and V), at whatever size it was scaled to.
    pub fn shows_bars(frame: &I420Frame, tolerance: u8) -> bool {
        let (w, h) = (frame.width(), frame.height());
        let bar = w / BARS.len() as u32;
        let band = Self::band_top(h);
        BARS.iter().enumerate().all(|(i, want)| {
            let x = i as u32 * bar + bar / 4;
            let got = frame.mean(x, band / 4, (bar / 2).max(1), (band / 2).max(1));
            got.is_some_and(|g| {
                g.0.abs_diff(want.0) <= tolerance
                    && g.1.abs_diff(want.1) <= tolerance
                    && g.2.abs_diff(want.2) <= tolerance
            })
        })
    }

    /// Where the marker is in `frame` (its left edge, from the brightest run along
    /// the band's middle row), if it shows.
    pub fn find_marker(frame: &I420Frame) -> Option<u32> {
        let (w, h) = (frame.width(), frame.height());
        let band = Self::band_top(h);
        let size = Self::marker_size(h);
        let row = band + (h - band).saturating_sub(size) / 2 + size / 2;
        let bright = |x: u32| frame.pixel(x, row).is_some_and(|p| p.0 > 180);
        let start = (0..w).find(|x| bright(*x))?;
        let run = (start..w).take_while(|x| bright(*x)).count() as u32;
        (run + 4 >= size && run <= size + 4).then_some(start)
    }
}

impl VideoSource for TestPattern {
    fn fps(&self) -> u32 {
        self.fps
    }

    fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    fn next_frame(&mut self) -> Result<Option<I420Frame>, MediaError> {
        let f = self.frame(self.index);
        self.index += 1;
        Ok(Some(f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_shows_its_bars_and_its_marker_moves() {
        let mut p = TestPattern::new(320, 240, 15).expect("pattern");
        let a = p.next_frame().expect("frame").expect("some");
        let b = p.next_frame().expect("frame").expect("some");
        assert!(TestPattern::shows_bars(&a, 2));
        assert_eq!(
            TestPattern::find_marker(&a),
            Some(TestPattern::marker_x(320, 240, 0))
        );
        assert_eq!(
            TestPattern::find_marker(&b),
            Some(TestPattern::marker_x(320, 240, 1))
        );
        assert_ne!(TestPattern::find_marker(&a), TestPattern::find_marker(&b));
        // A black picture shows neither.
        let black = I420Frame::black(320, 240).expect("frame");
        assert!(!TestPattern::shows_bars(&black, 10));
        assert_eq!(TestPattern::find_marker(&black), None);
    }
}
