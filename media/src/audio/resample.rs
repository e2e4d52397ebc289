//! Linear-interpolation resampling, enough for speech and test tones between 8, 16, 44.1
//! and 48 kHz.

/// Resamples `input` at `from` Hz to `to` Hz.
pub(crate) fn linear(input: &[i16], from: u32, to: u32) -> Vec<i16> {
    if from == to || input.is_empty() {
        return input.to_vec();
    }
    let out_len = (input.len() as u64 * u64::from(to) / u64::from(from)) as usize;
    let step = f64::from(from) / f64::from(to);
    (0..out_len)
        .map(|i| {
            let pos = i as f64 * step;
            let idx = pos as usize;
            let frac = pos - idx as f64;
            let a = f64::from(input[idx.min(input.len() - 1)]);
            let b = f64::from(input[(idx + 1).min(input.len() - 1)]);
            (a + (b - a) * frac).round() as i16
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{dominant_frequency, tone};

    #[test]
    fn keeps_pitch() {
        let src: Vec<i16> = tone(440.0, 44100, 0, 44100, 8000.0).collect();
        let out = linear(&src, 44100, 8000);
        assert_eq!(out.len(), 8000);
        assert_eq!(dominant_frequency(&out, 8000), 440.0);
        let up = linear(&out, 8000, 48000);
        assert_eq!(up.len(), 48000);
        assert_eq!(dominant_frequency(&up, 48000), 440.0);
    }
}
