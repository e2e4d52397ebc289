//! WAV files as call audio: a looping player and a recorder. Input files are checked
//! (format, size) before anything is allocated for them.

use super::resample;
use crate::MediaError;
use std::path::{Path, PathBuf};

/// Longest file we load: 10 minutes at 48 kHz.
const MAX_SAMPLES: u64 = 48_000 * 600;

/// Plays a WAV file into the call, from the start again when it ends.
pub struct WavSource {
    samples: Vec<i16>,
    position: usize,
}

fn err(path: &Path, why: impl std::fmt::Display) -> MediaError {
    MediaError::InvalidInput(format!("{}: {why}", path.display()))
}

impl WavSource {
    /// Loads `path` (16-bit PCM, or 32-bit float; any channels, downmixed) at `rate` Hz.
    pub fn open(path: &Path, rate: u32) -> Result<WavSource, MediaError> {
        let reader = hound::WavReader::open(path).map_err(|e| err(path, e))?;
        let spec = reader.spec();
        let frames = u64::from(reader.duration());
        if frames == 0 || frames > MAX_SAMPLES {
            return Err(err(path, "empty, or longer than 10 minutes"));
        }
        if spec.channels == 0 || spec.sample_rate < 4000 || spec.sample_rate > 192_000 {
            return Err(err(path, "unsupported channel count or sample rate"));
        }
        let channels = usize::from(spec.channels);
        let interleaved: Vec<i16> = match (spec.sample_format, spec.bits_per_sample) {
            (hound::SampleFormat::Int, 16) => reader
                .into_samples::<i16>()
                .collect::<Result<_, _>>()
                .map_err(|e| err(path, e))?,
            (hound::SampleFormat::Float, 32) => reader
                .into_samples::<f32>()
                .map(|s| s.map(|v| (v.clamp(-1.0, 1.0) * 32767.0) as i16))
                .collect::<Result<_, _>>()
                .map_err(|e| err(path, e))?,
            _ => {
                return Err(err(
                    path,
                    "only 16-bit PCM or 32-bit float WAV files are supported",
                ));
            }
        };
        let mono: Vec<i16> = interleaved
            .chunks(channels)
            .map(|c| (c.iter().map(|&s| i32::from(s)).sum::<i32>() / c.len() as i32) as i16)
            .collect();
        let samples = resample::linear(&mono, spec.sample_rate, rate);
        if samples.len() < (rate / 50) as usize {
            return Err(err(path, "shorter than one 20 ms frame"));
        }
        Ok(WavSource {
            samples,
            position: 0,
        })
    }

    /// Fills one frame, looping.
    pub fn read(&mut self, out: &mut [i16]) {
        if self.samples.is_empty() {
            out.fill(0);
            return;
        }
        for o in out.iter_mut() {
            *o = self.samples.get(self.position).copied().unwrap_or(0);
            self.position = (self.position + 1) % self.samples.len();
        }
    }
}

/// Records what the call plays to a 16-bit mono WAV file.
pub struct WavRecorder {
    writer: hound::WavWriter<std::io::BufWriter<std::fs::File>>,
    path: PathBuf,
}

impl WavRecorder {
    /// Creates (or replaces) `path`.
    pub fn create(path: &Path, rate: u32) -> Result<WavRecorder, MediaError> {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let writer = hound::WavWriter::create(path, spec).map_err(|e| err(path, e))?;
        Ok(WavRecorder {
            writer,
            path: path.to_path_buf(),
        })
    }

    /// Appends a frame.
    pub fn write(&mut self, frame: &[i16]) {
        for &s in frame {
            if self.writer.write_sample(s).is_err() {
                tracing::warn!(path = %self.path.display(), "cannot write the recording");
                return;
            }
        }
    }

    /// Completes the header.
    pub fn finish(self) -> Result<(), MediaError> {
        let path = self.path;
        self.writer.finalize().map_err(|e| err(&path, e))
    }
}

/// Reads a recorded (16-bit mono) WAV back, for checks: (samples, rate).
pub fn read_recording(path: &Path) -> Result<(Vec<i16>, u32), MediaError> {
    let reader = hound::WavReader::open(path).map_err(|e| err(path, e))?;
    let spec = reader.spec();
    if u64::from(reader.duration()) > MAX_SAMPLES {
        return Err(err(path, "too long"));
    }
    let channels = usize::from(spec.channels.max(1));
    let samples: Vec<i16> = reader
        .into_samples::<i16>()
        .collect::<Result<_, _>>()
        .map_err(|e| err(path, e))?;
    Ok((
        samples.into_iter().step_by(channels).collect(),
        spec.sample_rate,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{dominant_frequency, tone};

    #[test]
    fn play_and_record_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let input = dir.path().join("in.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 44100,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&input, spec).expect("create");
        for s in tone(440.0, 44100, 0, 44100, 8000.0) {
            w.write_sample(s).expect("l");
            w.write_sample(s).expect("r");
        }
        w.finalize().expect("finalize");
        let mut src = WavSource::open(&input, 8000).expect("open");
        let out = dir.path().join("out.wav");
        let mut rec = WavRecorder::create(&out, 8000).expect("create");
        let mut frame = [0i16; 160];
        for _ in 0..100 {
            src.read(&mut frame);
            rec.write(&frame);
        }
        rec.finish().expect("finish");
        let (samples, rate) = read_recording(&out).expect("read");
        assert_eq!((samples.len(), rate), (16000, 8000));
        assert_eq!(dominant_frequency(&samples, 8000), 440.0);
    }

    #[test]
    fn a_file_shorter_than_one_frame_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 48000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        // 1 sample at 48 kHz is nothing at 8 kHz; 900 samples are 150 < 160 samples.
        for n in [1, 5, 900] {
            let p = dir.path().join(format!("short{n}.wav"));
            let mut w = hound::WavWriter::create(&p, spec).expect("create");
            for _ in 0..n {
                w.write_sample(1000i16).expect("sample");
            }
            w.finalize().expect("finalize");
            let e = WavSource::open(&p, 8000).err().expect("refused");
            assert!(
                e.to_string().contains("shorter than one 20 ms frame"),
                "{e}"
            );
        }
        // One frame exactly is enough, and plays on a loop.
        let p = dir.path().join("frame.wav");
        let mut w = hound::WavWriter::create(&p, spec).expect("create");
        for _ in 0..960 {
            w.write_sample(1000i16).expect("sample");
        }
        w.finalize().expect("finalize");
        let mut src = WavSource::open(&p, 8000).expect("one frame");
        let mut frame = [0i16; 400];
        src.read(&mut frame);
        assert!(frame.iter().all(|&s| s == 1000));
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("junk.wav");
        std::fs::write(&p, b"RIFF\x00\x00\x00\x00WAVEjunk").expect("write");
        let e = WavSource::open(&p, 8000).err().expect("refused");
        assert!(e.to_string().contains("junk.wav"), "{e}");
        assert!(WavSource::open(&dir.path().join("missing.wav"), 8000).is_err());
    }
}
