//! YUV4MPEG2 (`.y4m`) files: a text header line, then `FRAME` lines each followed by
//! one raw picture. Read as a video source (looping, like a camera that never ends),
//! written to record what a call received. Only 4:2:0, 8-bit files are read; header
//! lines are bounded, and sizes too, before anything is allocated.

use super::frame::i420_size;
use super::{I420Frame, VideoSource};
use crate::MediaError;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};

/// Longest header or `FRAME` line we read.
const MAX_LINE: usize = 1024;

fn bad(why: impl Into<String>) -> MediaError {
    MediaError::InvalidInput(format!("not a Y4M file we can read: {}", why.into()))
}

/// Reads a line (without its `\n`), at most [`MAX_LINE`] bytes; `None` at the end.
fn read_line(r: &mut impl BufRead) -> Result<Option<Vec<u8>>, MediaError> {
    let mut line = Vec::new();
    let n = r
        .by_ref()
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut line)
        .map_err(|e| bad(e.to_string()))?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(bad(if n > MAX_LINE {
            "a header line is too long"
        } else {
            "the file ends inside a line"
        }));
    }
    line.pop();
    Ok(Some(line))
}

/// A Y4M header's facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Y4mHeader {
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// Frames per second (rounded; at least 1).
    pub fps: u32,
}

/// Parses the header line (without its `\n`).
pub fn parse_header(line: &[u8]) -> Result<Y4mHeader, MediaError> {
    let text = std::str::from_utf8(line).map_err(|_| bad("the header is not text"))?;
    let mut words = text.split(' ');
    if words.next() != Some("YUV4MPEG2") {
        return Err(bad("no YUV4MPEG2 signature"));
    }
    let (mut width, mut height, mut fps) = (None, None, 30u32);
    for w in words.filter(|w| !w.is_empty()) {
        // A word is a one-letter tag and its value (a multi-byte first character is
        // no tag of ours).
        let Some((tag, value)) = w.split_at_checked(1) else {
            continue;
        };
        match tag {
            "W" => width = value.parse::<u32>().ok(),
            "H" => height = value.parse::<u32>().ok(),
            "F" => {
                let (n, d) = value.split_once(':').ok_or_else(|| bad("frame rate"))?;
                let (n, d) = (
                    n.parse::<u64>().map_err(|_| bad("frame rate"))?,
                    d.parse::<u64>().map_err(|_| bad("frame rate"))?,
                );
                if d == 0 || n == 0 {
                    return Err(bad("frame rate"));
                }
                fps = (n.saturating_add(d / 2) / d).clamp(1, 120) as u32;
            }
            "C" if !value.starts_with("420") || value.contains("p1") => {
                return Err(bad(format!("colour space C{value} (only 4:2:0, 8 bits)")));
            }
            "I" if value != "p" && value != "?" => {
                return Err(bad("interlaced pictures"));
            }
            _ => {}
        }
    }
    let (width, height) = (
        width.ok_or_else(|| bad("no width"))?,
        height.ok_or_else(|| bad("no height"))?,
    );
    i420_size(width, height)?;
    Ok(Y4mHeader { width, height, fps })
}

/// A Y4M file as a video source.
pub struct Y4mReader<R> {
    input: BufReader<R>,
    header: Y4mHeader,
    /// Where the first frame starts, to loop back to.
    first_frame: u64,
    looping: bool,
}

impl<R: Read + Seek + Send> Y4mReader<R> {
    /// Reads the header; with `looping`, the file starts again at its end.
    pub fn new(input: R, looping: bool) -> Result<Y4mReader<R>, MediaError> {
        let mut input = BufReader::new(input);
        let line = read_line(&mut input)?.ok_or_else(|| bad("empty file"))?;
        let header = parse_header(&line)?;
        Ok(Y4mReader {
            input,
            header,
            first_frame: line.len() as u64 + 1,
            looping,
        })
    }

    /// The header's facts.
    pub fn header(&self) -> Y4mHeader {
        self.header
    }

    fn read_frame(&mut self) -> Result<Option<I420Frame>, MediaError> {
        let Some(line) = read_line(&mut self.input)? else {
            return Ok(None);
        };
        if !line.starts_with(b"FRAME") {
            return Err(bad("a frame without its FRAME line"));
        }
        let size = i420_size(self.header.width, self.header.height)?;
        let mut data = vec![0u8; size];
        self.input
            .read_exact(&mut data)
            .map_err(|_| bad("the file ends inside a frame"))?;
        I420Frame::from_bytes(self.header.width, self.header.height, data).map(Some)
    }
}

impl<R: Read + Seek + Send> VideoSource for Y4mReader<R> {
    fn fps(&self) -> u32 {
        self.header.fps
    }

    fn size(&self) -> (u32, u32) {
        (self.header.width, self.header.height)
    }

    fn next_frame(&mut self) -> Result<Option<I420Frame>, MediaError> {
        match self.read_frame()? {
            Some(f) => Ok(Some(f)),
            None if self.looping => {
                self.input
                    .seek(SeekFrom::Start(self.first_frame))
                    .map_err(|e| bad(e.to_string()))?;
                self.read_frame()
            }
            None => Ok(None),
        }
    }
}

/// Writes pictures to a Y4M file; the first picture fixes the size (a picture of
/// another size later is refused: Y4M cannot change size mid-file).
pub struct Y4mWriter<W: Write> {
    out: W,
    fps: u32,
    size: Option<(u32, u32)>,
    frames: u64,
    bytes: u64,
}

impl<W: Write> Y4mWriter<W> {
    /// A writer at `fps` frames per second.
    pub fn new(out: W, fps: u32) -> Y4mWriter<W> {
        Y4mWriter {
            out,
            fps: fps.max(1),
            size: None,
            frames: 0,
            bytes: 0,
        }
    }

    /// Bytes of pictures written.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Appends a picture.
    pub fn write(&mut self, frame: &I420Frame) -> Result<(), MediaError> {
        let size = (frame.width(), frame.height());
        let io = |e: std::io::Error| MediaError::InvalidInput(format!("writing the Y4M file: {e}"));
        match self.size {
            None => {
                writeln!(
                    self.out,
                    "YUV4MPEG2 W{} H{} F{}:1 Ip A1:1 C420jpeg",
                    size.0, size.1, self.fps
                )
                .map_err(io)?;
                self.size = Some(size);
            }
            Some(s) if s != size => {
                return Err(MediaError::InvalidInput(format!(
                    "the recording is {}x{}; a {}x{} picture cannot join it",
                    s.0, s.1, size.0, size.1
                )));
            }
            Some(_) => {}
        }
        self.out.write_all(b"FRAME\n").map_err(io)?;
        self.out.write_all(frame.as_bytes()).map_err(io)?;
        self.frames += 1;
        self.bytes += frame.as_bytes().len() as u64;
        Ok(())
    }

    /// Pictures written.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Flushes and gives the output back.
    pub fn finish(mut self) -> Result<W, MediaError> {
        self.out
            .flush()
            .map_err(|e| MediaError::InvalidInput(format!("writing the Y4M file: {e}")))?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::TestPattern;
    use std::io::Cursor;

    #[test]
    fn what_is_written_reads_back_and_loops() {
        let p = TestPattern::new(64, 48, 15).expect("pattern");
        let mut w = Y4mWriter::new(Vec::new(), 15);
        for i in 0..3 {
            w.write(&p.frame(i)).expect("write");
        }
        let file = w.finish().expect("finish");
        let mut r = Y4mReader::new(Cursor::new(file.clone()), true).expect("reader");
        assert_eq!(
            r.header(),
            Y4mHeader {
                width: 64,
                height: 48,
                fps: 15
            }
        );
        for i in 0..5 {
            let f = r.next_frame().expect("read").expect("a frame");
            assert_eq!(f, p.frame(i % 3), "frame {i}");
        }
        let mut once = Y4mReader::new(Cursor::new(file), false).expect("reader");
        for _ in 0..3 {
            assert!(once.next_frame().expect("read").is_some());
        }
        assert!(once.next_frame().expect("read").is_none());
    }

    #[test]
    fn a_recording_keeps_its_size() {
        let mut w = Y4mWriter::new(Vec::new(), 15);
        w.write(&I420Frame::black(64, 48).expect("frame"))
            .expect("write");
        assert!(w.write(&I420Frame::black(32, 32).expect("frame")).is_err());
        assert_eq!(w.frames(), 1);
    }

    #[test]
    fn hostile_files_are_refused_before_allocating() {
        for header in [
            &b"YUV4MPEG2 W100000 H100000 F30:1\n"[..],
            b"YUV4MPEG2 W16383 H16383\n",
            b"YUV4MPEG2 W0 H10\n",
            b"YUV4MPEG2 H10\n",
            b"YUV4MPEG2 W64 H48 C444\n",
            b"YUV4MPEG2 W64 H48 C420p10\n",
            b"YUV4MPEG2 W64 H48 F1:0\n",
            b"YUV4MPEG2 W64 H48 It\n",
            "YUV4MPEG2 \u{e9}x W64\n".as_bytes(),
            b"MPEG2 W64 H48\n",
            b"",
        ] {
            assert!(
                Y4mReader::new(Cursor::new(header.to_vec()), false).is_err(),
                "{header:?}"
            );
        }
        // A frame rate at the edge of the numbers: clamped, no overflow.
        let edge = parse_header(b"YUV4MPEG2 W64 H48 F18446744073709551615:2").expect("header");
        assert_eq!(edge.fps, 120);
        let long = [b"YUV4MPEG2 ".to_vec(), vec![b'X'; 5000]].concat();
        assert!(Y4mReader::new(Cursor::new(long), false).is_err());
        // A frame cut short, and junk where a FRAME line should be.
        let mut cut = b"YUV4MPEG2 W64 H48\nFRAME\n".to_vec();
        cut.extend_from_slice(&[0u8; 100]);
        let mut r = Y4mReader::new(Cursor::new(cut), true).expect("header");
        assert!(r.next_frame().is_err());
        let mut junk = Y4mReader::new(Cursor::new(b"YUV4MPEG2 W64 H48\nJUNK\n".to_vec()), true)
            .expect("header");
        assert!(junk.next_frame().is_err());
    }
}
