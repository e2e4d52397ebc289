//! Reading WAV files written by other programs, tolerating a header whose data length
//! was never fixed up (linphonec leaves it so when it is stopped).

use crate::{HarnessError, Result, io};
use std::path::Path;

/// 16-bit PCM samples of the first channel, and the sample rate.
pub fn read_wav_lenient(path: &Path) -> Result<(Vec<i16>, u32)> {
    let bytes = std::fs::read(path).map_err(io(format!("read {}", path.display())))?;
    let bad = |why: &str| HarnessError::Tool(format!("{}: {why}", path.display()));
    if bytes.len() < 44 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(bad("not a WAV file"));
    }
    let mut pos = 12;
    let (mut channels, mut rate, mut bits) = (1usize, 8000u32, 16u16);
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let len = u32::from_le_bytes([
            bytes[pos + 4],
            bytes[pos + 5],
            bytes[pos + 6],
            bytes[pos + 7],
        ]) as usize;
        let body = pos + 8;
        if id == b"fmt " && body + 16 <= bytes.len() {
            channels = usize::from(u16::from_le_bytes([bytes[body + 2], bytes[body + 3]])).max(1);
            rate = u32::from_le_bytes([
                bytes[body + 4],
                bytes[body + 5],
                bytes[body + 6],
                bytes[body + 7],
            ]);
            bits = u16::from_le_bytes([bytes[body + 14], bytes[body + 15]]);
        }
        if id == b"data" {
            if bits != 16 {
                return Err(bad("not 16-bit PCM"));
            }
            let end = (body + len).min(bytes.len());
            let samples: Vec<i16> = bytes[body..end]
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]))
                .step_by(channels)
                .collect();
            return Ok((samples, rate));
        }
        pos = body + len + (len & 1);
    }
    Err(bad("no data chunk"))
}

/// Writes a 16-bit mono WAV file.
pub fn write_wav(path: &Path, rate: u32, samples: &[i16]) -> Result<()> {
    let data_len = (samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + samples.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(path, out).map_err(io(format!("write {}", path.display())))
}
