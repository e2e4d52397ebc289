//! G.711 μ-law (PCMU) and A-law (PCMA), ITU-T G.711: 8 kHz, one byte per sample.

const BIAS: i32 = 0x84;
const CLIP: i32 = 32635;

/// Encodes one linear sample to μ-law.
pub fn ulaw_encode(sample: i16) -> u8 {
    let mut s = i32::from(sample);
    let sign = if s < 0 { 0x80 } else { 0 };
    if s < 0 {
        s = -s;
    }
    s = s.min(CLIP) + BIAS;
    let exponent = (7 - (s << 17).leading_zeros().min(7)) as i32;
    let mantissa = (s >> (exponent + 3)) & 0x0f;
    !(sign | (exponent << 4) as u8 as i32 | mantissa) as u8
}

/// Decodes one μ-law byte.
pub fn ulaw_decode(byte: u8) -> i16 {
    let b = !byte;
    let sign = b & 0x80;
    let exponent = i32::from((b >> 4) & 0x07);
    let mantissa = i32::from(b & 0x0f);
    let magnitude = (((mantissa << 3) + BIAS) << exponent) - BIAS;
    (if sign != 0 { -magnitude } else { magnitude }) as i16
}

/// Encodes one linear sample to A-law.
pub fn alaw_encode(sample: i16) -> u8 {
    let mut s = i32::from(sample) >> 3; // 13-bit magnitude
    let sign = if s >= 0 { 0xD5 } else { 0x55 };
    if s < 0 {
        s = -s - 1;
    }
    s = s.min(0x0fff);
    let byte = if s < 32 {
        (s >> 1) as u8
    } else {
        let exponent = 31 - (s as u32).leading_zeros() - 4; // 1..=7
        let mantissa = (s >> exponent) & 0x0f;
        ((exponent << 4) as i32 | mantissa) as u8
    };
    byte ^ sign
}

/// Decodes one A-law byte.
pub fn alaw_decode(byte: u8) -> i16 {
    let b = byte ^ 0x55;
    let sign = b & 0x80;
    let exponent = i32::from((b >> 4) & 0x07);
    let mantissa = i32::from(b & 0x0f);
    let magnitude = if exponent == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (exponent - 1)
    };
    (if sign != 0 { magnitude } else { -magnitude }) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_known_values_and_roundtrip() {
        assert_eq!(ulaw_encode(0), 0xff);
        assert_eq!(ulaw_decode(0xff), 0);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        for s in (-32768i32..32768).step_by(7) {
            let s = s as i16;
            let back = ulaw_decode(ulaw_encode(s));
            let err = (i32::from(back) - i32::from(s)).abs();
            // Quantisation error grows with magnitude: at most ~1/16 of the value.
            assert!(
                err <= (i32::from(s).abs() / 16).max(8) + 132,
                "{s} -> {back}"
            );
        }
        for b in 0..=255u8 {
            assert_eq!(
                ulaw_encode(ulaw_decode(b)),
                if b == 0x7f { 0xff } else { b },
                "byte {b:#x}"
            );
        }
    }

    #[test]
    fn alaw_known_values_and_roundtrip() {
        assert_eq!(alaw_encode(0), 0xd5);
        assert_eq!(alaw_decode(0xd5), 8);
        for s in (-32768i32..32768).step_by(7) {
            let s = s as i16;
            let back = alaw_decode(alaw_encode(s));
            let err = (i32::from(back) - i32::from(s)).abs();
            assert!(
                err <= (i32::from(s).abs() / 16).max(16) + 16,
                "{s} -> {back}"
            );
        }
        for b in 0..=255u8 {
            assert_eq!(alaw_encode(alaw_decode(b)), b, "byte {b:#x}");
        }
    }
}
