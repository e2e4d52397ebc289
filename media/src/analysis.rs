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

/// Whether sample `n` of a beep pattern (200 ms on, 800 ms off) is sounding.
pub fn beep_on(n: u64, rate: u32) -> bool {
    n % u64::from(rate) < u64::from(rate) / 5
}

/// Energy per 5 ms block.
fn envelope(samples: &[i16], rate: u32) -> Vec<f64> {
    let block = (rate / 200).max(1) as usize;
    samples
        .chunks(block)
        .map(|c| c.iter().map(|&s| f64::from(s).abs()).sum::<f64>() / c.len() as f64)
        .collect()
}

/// The delay of the beep pattern in `received` relative to the pattern that started at
/// sample 0 (in milliseconds, 5 ms resolution), and how well it matches (correlation
/// 0..1). `None` when the recording is silent.
pub fn beep_delay(received: &[i16], rate: u32) -> Option<(u32, f64)> {
    let env = envelope(received, rate);
    let block = (rate / 200).max(1) as u64;
    let pattern: Vec<f64> = (0..env.len())
        .map(|i| {
            if beep_on(i as u64 * block, rate) {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    let mean = env.iter().sum::<f64>() / env.len().max(1) as f64;
    if mean == 0.0 {
        return None;
    }
    let mut best = (0usize, f64::MIN);
    // The pattern repeats every second: look for the delay within one period.
    for lag in 0..200usize.min(env.len()) {
        let n = env.len() - lag;
        let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
        let pm = pattern[..n].iter().sum::<f64>() / n as f64;
        let em = env[lag..].iter().sum::<f64>() / n as f64;
        for i in 0..n {
            let (x, y) = (pattern[i] - pm, env[lag + i] - em);
            sxy += x * y;
            sxx += x * x;
            syy += y * y;
        }
        let c = if sxx > 0.0 && syy > 0.0 {
            sxy / (sxx * syy).sqrt()
        } else {
            0.0
        };
        if c > best.1 {
            best = (lag, c);
        }
    }
    Some((best.0 as u32 * 5, best.1))
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

    #[test]
    fn measures_beep_delay() {
        let rate = 8000;
        let delay = 1200; // 150 ms
        let clean: Vec<i16> = tone(440.0, rate, 0, 4 * rate as usize, 8000.0)
            .enumerate()
            .map(|(i, s)| if beep_on(i as u64, rate) { s } else { 0 })
            .collect();
        let mut delayed = vec![0i16; delay];
        delayed.extend_from_slice(&clean[..clean.len() - delay]);
        let (ms, corr) = beep_delay(&delayed, rate).expect("not silent");
        assert_eq!(ms, 150);
        assert!(corr > 0.9, "{corr}");
        assert!(beep_delay(&vec![0; 8000], rate).is_none());
    }
}
