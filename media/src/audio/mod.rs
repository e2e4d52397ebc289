//! Where call audio comes from and goes to. Real devices (cpal) for people; a WAV file
//! player and recorder, a tone generator and silence for tests and scripts. Everything
//! works in 20 ms frames of mono 16-bit samples at the codec's rate; files at another
//! rate are resampled.

mod check;
mod device;
mod resample;
mod wav;

pub use check::{AudioCheck, LevelMeter, frame_level};
pub use device::{Microphone, Speaker, device_names};
pub use wav::{WavRecorder, WavSource, read_recording};

use crate::MediaError;
use std::path::PathBuf;

/// What to use as the microphone.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    /// The system's default input device.
    Device,
    /// The input device with this name (see [`device_names`]).
    NamedDevice(String),
    /// Silence.
    Silence,
    /// A sine tone at this frequency (Hz), -12 dBFS.
    Tone(f64),
    /// Play a WAV file (looped while the call lasts).
    Wav(PathBuf),
    /// Send back what we hear (the echo-test peer).
    Echo,
    /// Beeps at this frequency: 200 ms on, 800 ms off (latency measurement).
    Beeps(f64),
}

/// What to use as the speaker.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkSpec {
    /// The system's default output device.
    Device,
    /// The output device with this name (see [`device_names`]).
    NamedDevice(String),
    /// Discard.
    Null,
    /// Record to a WAV file (16-bit mono at the codec rate).
    Wav(PathBuf),
}

/// A running microphone.
pub enum Source {
    /// Silence.
    Silence,
    /// A tone generator with its phase.
    Tone {
        /// Frequency in Hz.
        freq: f64,
        /// Samples produced so far.
        position: u64,
        /// Gate it into beeps.
        beeps: bool,
    },
    /// A WAV player.
    Wav(Box<WavSource>),
    /// A sound card.
    Device(Box<Microphone>),
}

impl Source {
    /// Opens the source for audio at `rate` Hz.
    pub fn open(spec: &SourceSpec, rate: u32) -> Result<Source, MediaError> {
        Ok(match spec {
            SourceSpec::Silence | SourceSpec::Echo => Source::Silence,
            SourceSpec::Tone(f) | SourceSpec::Beeps(f) => {
                if !(20.0..=20_000.0).contains(f) {
                    return Err(MediaError::InvalidInput(format!(
                        "tone frequency {f} Hz is out of range"
                    )));
                }
                Source::Tone {
                    freq: *f,
                    position: 0,
                    beeps: matches!(spec, SourceSpec::Beeps(_)),
                }
            }
            SourceSpec::Wav(path) => Source::Wav(Box::new(WavSource::open(path, rate)?)),
            SourceSpec::Device => Source::Device(Box::new(Microphone::open(rate)?)),
            SourceSpec::NamedDevice(n) => {
                Source::Device(Box::new(Microphone::open_named(rate, Some(n))?))
            }
        })
    }

    /// Fills one frame.
    pub fn read(&mut self, rate: u32, out: &mut [i16]) {
        match self {
            Source::Silence => out.fill(0),
            Source::Tone {
                freq,
                position,
                beeps,
            } => {
                let n = out.len();
                let start = *position;
                for (i, (o, s)) in out
                    .iter_mut()
                    .zip(crate::analysis::tone(*freq, rate, start, n, 8192.0))
                    .enumerate()
                {
                    let on = !*beeps || crate::analysis::beep_on(start + i as u64, rate);
                    *o = if on { s } else { 0 };
                }
                *position += n as u64;
            }
            Source::Wav(w) => w.read(out),
            Source::Device(m) => m.read(out),
        }
    }
}

/// A running speaker.
pub enum Sink {
    /// Discard.
    Null,
    /// WAV recorder.
    Wav(Box<WavRecorder>),
    /// A sound card.
    Device(Box<Speaker>),
}

impl Sink {
    /// Opens the sink for audio at `rate` Hz.
    pub fn open(spec: &SinkSpec, rate: u32) -> Result<Sink, MediaError> {
        Ok(match spec {
            SinkSpec::Null => Sink::Null,
            SinkSpec::Wav(path) => Sink::Wav(Box::new(WavRecorder::create(path, rate)?)),
            SinkSpec::Device => Sink::Device(Box::new(Speaker::open(rate)?)),
            SinkSpec::NamedDevice(n) => Sink::Device(Box::new(Speaker::open_named(rate, Some(n))?)),
        })
    }

    /// Takes one frame.
    pub fn write(&mut self, frame: &[i16]) {
        match self {
            Sink::Null => {}
            Sink::Wav(w) => w.write(frame),
            Sink::Device(s) => s.write(frame),
        }
    }

    /// Flushes files; called when the call ends.
    pub fn finish(self) -> Result<(), MediaError> {
        match self {
            Sink::Null | Sink::Device(_) => Ok(()),
            Sink::Wav(w) => w.finish(),
        }
    }
}
