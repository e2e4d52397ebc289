//! The settings page's audio check: a level meter on the chosen microphone and a short
//! test tone on the chosen speaker, on a thread of its own (cpal streams stay on the
//! thread that opened them). The window reads the level; nothing else is shared.

use super::{Sink, SinkSpec, Source, SourceSpec};
use crate::MediaError;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

const RATE: u32 = 48_000;
const FRAME: usize = 960; // 20 ms

/// A running audio check. Stops (and finishes a WAV sink) when dropped.
pub struct AudioCheck {
    meter: LevelMeter,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The microphone's level, readable from any thread.
#[derive(Debug, Clone)]
pub struct LevelMeter {
    level: Arc<AtomicU32>,
}

impl PartialEq for LevelMeter {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.level, &other.level)
    }
}

impl Eq for LevelMeter {}

impl LevelMeter {
    /// The last 20 ms's loudness, 0.0 (silence, -60 dBFS or less) to 1.0 (full scale).
    pub fn level(&self) -> f32 {
        f32::from_bits(self.level.load(Ordering::Relaxed))
    }
}

/// Loudness of a frame on a 60 dB scale, 0.0..=1.0.
pub fn frame_level(frame: &[i16]) -> f32 {
    if frame.is_empty() {
        return 0.0;
    }
    let sum: f64 = frame.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    let rms = (sum / frame.len() as f64).sqrt() / 32768.0;
    if rms <= 0.0 {
        return 0.0;
    }
    let db = 20.0 * rms.log10();
    ((db + 60.0) / 60.0).clamp(0.0, 1.0) as f32
}

impl AudioCheck {
    /// Opens `source` and `sink`, plays `tone_for` of 440 Hz to the sink (then silence),
    /// and meters the source until stopped. Fails at once if a device cannot be opened.
    pub fn start(
        source: SourceSpec,
        sink: SinkSpec,
        tone_for: Duration,
    ) -> Result<AudioCheck, MediaError> {
        let meter = LevelMeter {
            level: Arc::new(AtomicU32::new(0f32.to_bits())),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let (opened_tx, opened_rx) = std::sync::mpsc::channel();
        let (level, halt) = (meter.level.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("audio-check".into())
            .spawn(move || {
                let devices = Source::open(&source, RATE)
                    .and_then(|src| Sink::open(&sink, RATE).map(|snk| (src, snk)));
                let (mut src, mut snk) = match devices {
                    Ok(d) => {
                        let _ = opened_tx.send(Ok(()));
                        d
                    }
                    Err(e) => {
                        let _ = opened_tx.send(Err(e));
                        return;
                    }
                };
                let mut tone = Source::Tone {
                    freq: 440.0,
                    position: 0,
                    beeps: false,
                };
                let start = Instant::now();
                let mut frame = [0i16; FRAME];
                let mut n = 0u32;
                while !halt.load(Ordering::Relaxed) {
                    src.read(RATE, &mut frame);
                    level.store(frame_level(&frame).to_bits(), Ordering::Relaxed);
                    if start.elapsed() < tone_for {
                        tone.read(RATE, &mut frame);
                    } else {
                        frame.fill(0);
                    }
                    snk.write(&frame);
                    n += 1;
                    // Paced by the clock: frame n is due at n × 20 ms.
                    let due = start + Duration::from_millis(20) * n;
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
                if let Err(e) = snk.finish() {
                    tracing::warn!(error = %e, "audio check: finishing the output");
                }
            })
            .map_err(|e| MediaError::InvalidInput(format!("cannot start the audio check: {e}")))?;
        match opened_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => Ok(AudioCheck {
                meter,
                stop,
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                stop.store(true, Ordering::Relaxed);
                Err(MediaError::InvalidInput(
                    "the audio device did not open within 5 s".into(),
                ))
            }
        }
    }

    /// The microphone's level.
    pub fn meter(&self) -> LevelMeter {
        self.meter.clone()
    }
}

impl Drop for AudioCheck {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_span_silence_to_full_scale() {
        assert_eq!(frame_level(&[0; 960]), 0.0);
        assert_eq!(frame_level(&[]), 0.0);
        assert!((frame_level(&[i16::MAX; 960]) - 1.0).abs() < 0.001);
        // -12 dBFS sine (amplitude 8192): rms is -15 dBFS → 0.75.
        let tone: Vec<i16> = crate::analysis::tone(440.0, 48_000, 0, 960, 8192.0).collect();
        assert!(
            (frame_level(&tone) - 0.75).abs() < 0.02,
            "{}",
            frame_level(&tone)
        );
    }

    #[test]
    fn the_check_meters_the_source_and_plays_the_tone() {
        let dir = std::env::temp_dir().join(format!("hush-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let out = dir.join("out.wav");
        let check = AudioCheck::start(
            SourceSpec::Tone(1000.0),
            SinkSpec::Wav(out.clone()),
            Duration::from_millis(300),
        )
        .expect("start");
        let deadline = Instant::now() + Duration::from_secs(5);
        while check.meter().level() < 0.5 {
            assert!(Instant::now() < deadline, "no level within 5 s");
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(400));
        drop(check);
        let (samples, rate) = super::super::read_recording(&out).expect("recording");
        let first = &samples[..(rate as usize / 10)];
        assert_eq!(crate::analysis::dominant_frequency(first, rate), 440.0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
