//! Small signal measurements used by the echo test and the call tests: tone generation,
//! level, and the dominant frequency (Goertzel), so "the tone arrived" is checked by
//! pitch and level rather than by "not silent".

use std::f64::consts::PI;

/// `n` samples of a sine at `freq` Hz, `amplitude` peak, starting at sample `offset`.
pub fn tone(
    freq: f64,
    rate: u32,
    offset: u64,
    n: usize,
    amplitude: f64,
) -> impl Iterator<Item = i16> {
    (0..n).map(move |i| {
        let t = (offset + i as u64) as f64 / f64::from(rate);
        (amplitude * (2.0 * PI * freq * t).sin())
            .round()
            .clamp(-32768.0, 32767.0) as i16
    })
}

/// Root-mean-square level.
pub fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    (samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / samples.len() as f64).sqrt()
}

/// Power of `freq` in `samples` (Goertzel algorithm).
pub fn power_at(samples: &[i16], rate: u32, freq: f64) -> f64 {
    let w = 2.0 * PI * freq / f64::from(rate);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

/// The strongest frequency between 100 Hz and 3400 Hz (telephone band), in 5 Hz steps.
pub fn dominant_frequency(samples: &[i16], rate: u32) -> f64 {
    let mut best = (0.0, 0.0);
    let mut f = 100.0;
    while f <= 3400.0 {
        let p = power_at(samples, rate, f);
        if p > best.1 {
            best = (f, p);
        }
        f += 5.0;
    }
    best.0
}

/// Share of the signal's power at `freq` (±10 Hz) versus in the whole band: close to 1
/// for a clean tone, low for noise or a different signal.
pub fn tone_purity(samples: &[i16], rate: u32, freq: f64) -> f64 {
    let total: f64 =
        samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() * samples.len() as f64 / 2.0;
    if total == 0.0 {
        return 0.0;
    }
    let peak = [-10.0, -5.0, 0.0, 5.0, 10.0]
        .iter()
        .map(|d| power_at(samples, rate, freq + d))
        .fold(0.0, f64::max);
    (peak / total).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_tone() {
        let s: Vec<i16> = tone(440.0, 8000, 0, 8000, 10000.0).collect();
        assert_eq!(dominant_frequency(&s, 8000), 440.0);
        assert!((rms(&s) - 10000.0 / 2f64.sqrt()).abs() < 50.0);
        assert!(tone_purity(&s, 8000, 440.0) > 0.9);
        assert!(tone_purity(&s, 8000, 880.0) < 0.1);
        let silence = vec![0i16; 800];
        assert_eq!(rms(&silence), 0.0);
        assert_eq!(tone_purity(&silence, 8000, 440.0), 0.0);
    }
}
