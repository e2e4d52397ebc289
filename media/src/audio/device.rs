//! Real sound cards through cpal. The device callbacks only move samples through
//! lock-free ring buffers; the media thread reads and writes whole frames. Without a
//! sound card (servers, containers, CI) opening fails with a clear error.

use crate::MediaError;
use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use ringbuf::HeapRb;
use ringbuf::traits::{Consumer, Producer, Split};

/// Samples buffered between the device and the media thread: 200 ms at 48 kHz.
const RING: usize = 9600;

fn config(rate: u32) -> cpal::StreamConfig {
    cpal::StreamConfig {
        channels: 1,
        sample_rate: rate,
        buffer_size: cpal::BufferSize::Default,
    }
}

fn no_device(what: &str, detail: impl std::fmt::Display) -> MediaError {
    MediaError::InvalidInput(format!(
        "no usable audio {what} ({detail}); choose a file or tone instead (--play, --tone, --record)"
    ))
}

/// A microphone: the callback pushes, the media thread pops a frame at a time.
pub struct Microphone {
    _stream: cpal::Stream,
    samples: ringbuf::HeapCons<i16>,
}

impl Microphone {
    /// Opens the default input device as mono at `rate` Hz.
    pub fn open(rate: u32) -> Result<Microphone, MediaError> {
        let host = cpal::default_host();
        let device = host
            .default_input_device()
            .ok_or_else(|| no_device("input", "no input device"))?;
        let (mut tx, rx) = HeapRb::<i16>::new(RING).split();
        let stream = device
            .build_input_stream(
                config(rate),
                move |data: &[i16], _: &cpal::InputCallbackInfo| {
                    // If the media thread falls behind, the newest samples are dropped.
                    let _ = tx.push_slice(data);
                },
                |e| tracing::warn!(error = %e, "microphone"),
                None,
            )
            .map_err(|e| no_device("input", e))?;
        stream.play().map_err(|e| no_device("input", e))?;
        Ok(Microphone {
            _stream: stream,
            samples: rx,
        })
    }

    /// Fills a frame; missing samples (device slower than the call clock) are silence.
    pub fn read(&mut self, out: &mut [i16]) {
        let n = self.samples.pop_slice(out);
        out[n..].fill(0);
    }
}

/// A speaker: the media thread pushes frames, the callback pulls.
pub struct Speaker {
    _stream: cpal::Stream,
    samples: ringbuf::HeapProd<i16>,
}

impl Speaker {
    /// Opens the default output device as mono at `rate` Hz.
    pub fn open(rate: u32) -> Result<Speaker, MediaError> {
        let host = cpal::default_host();
        let device = host
            .default_output_device()
            .ok_or_else(|| no_device("output", "no output device"))?;
        let (tx, mut rx) = HeapRb::<i16>::new(RING).split();
        let stream = device
            .build_output_stream(
                config(rate),
                move |data: &mut [i16], _: &cpal::OutputCallbackInfo| {
                    let n = rx.pop_slice(data);
                    data[n..].fill(0);
                },
                |e| tracing::warn!(error = %e, "speaker"),
                None,
            )
            .map_err(|e| no_device("output", e))?;
        stream.play().map_err(|e| no_device("output", e))?;
        Ok(Speaker {
            _stream: stream,
            samples: tx,
        })
    }

    /// Queues a frame for playback.
    pub fn write(&mut self, frame: &[i16]) {
        let _ = self.samples.push_slice(frame);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine has no sound card: opening must fail cleanly, naming the way out.
    /// (Where a card exists, it must open.)
    #[test]
    fn opening_reports_missing_devices_clearly() {
        match Microphone::open(8000) {
            Ok(_) => eprintln!("microphone opened"),
            Err(e) => assert!(e.to_string().contains("--play"), "{e}"),
        }
        match Speaker::open(8000) {
            Ok(_) => {}
            Err(e) => assert!(e.to_string().contains("--record"), "{e}"),
        }
    }
}
