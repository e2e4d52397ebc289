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

/// Names of the input and output devices the system offers (empty without a sound
/// card), for the user to choose from.
pub fn device_names() -> (Vec<String>, Vec<String>) {
    let host = cpal::default_host();
    fn names<D: DeviceTrait>(devices: Option<impl Iterator<Item = D>>) -> Vec<String> {
        let mut out: Vec<String> = devices
            .map(|d| d.take(64).map(|dev| dev.to_string()).collect())
            .unwrap_or_default();
        out.sort();
        out.dedup();
        out
    }
    (
        names(host.input_devices().ok()),
        names(host.output_devices().ok()),
    )
}

/// The named input (`output` false) or output device, or the default one.
fn find_device(name: Option<&str>, output: bool) -> Result<cpal::Device, MediaError> {
    let host = cpal::default_host();
    let what = if output { "output" } else { "input" };
    match name {
        None => if output {
            host.default_output_device()
        } else {
            host.default_input_device()
        }
        .ok_or_else(|| no_device(what, format!("no {what} device"))),
        Some(n) => {
            let devices = if output {
                host.output_devices()
            } else {
                host.input_devices()
            }
            .map_err(|e| no_device(what, e))?;
            devices
                .into_iter()
                .find(|d| d.to_string() == n)
                .ok_or_else(|| no_device(what, format!("no {what} device named {n:?}")))
        }
    }
}

/// A microphone: the callback pushes, the media thread pops a frame at a time.
pub struct Microphone {
    _stream: cpal::Stream,
    samples: ringbuf::HeapCons<i16>,
}

impl Microphone {
    /// Opens the default input device as mono at `rate` Hz.
    pub fn open(rate: u32) -> Result<Microphone, MediaError> {
        Self::open_named(rate, None)
    }

    /// Opens the input device called `name` (or the default one) as mono at `rate` Hz.
    pub fn open_named(rate: u32, name: Option<&str>) -> Result<Microphone, MediaError> {
        let device = find_device(name, false)?;
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
        Self::open_named(rate, None)
    }

    /// Opens the output device called `name` (or the default one) as mono at `rate` Hz.
    pub fn open_named(rate: u32, name: Option<&str>) -> Result<Speaker, MediaError> {
        let device = find_device(name, true)?;
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

    /// Every listed device opens by its name, or says clearly why not; an unknown
    /// name is refused by name.
    #[test]
    fn listed_devices_open_by_name_and_unknown_names_are_refused() {
        let (inputs, outputs) = device_names();
        for n in &inputs {
            if let Err(e) = Microphone::open_named(8000, Some(n)) {
                assert!(e.to_string().contains("no usable audio input"), "{e}");
            }
        }
        for n in &outputs {
            if let Err(e) = Speaker::open_named(8000, Some(n)) {
                assert!(e.to_string().contains("no usable audio output"), "{e}");
            }
        }
        let e = Microphone::open_named(8000, Some("no such microphone"))
            .err()
            .expect("refused");
        assert!(e.to_string().contains("\"no such microphone\""), "{e}");
    }
}
