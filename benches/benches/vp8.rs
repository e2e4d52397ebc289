//! VP8 encode and decode time per frame through our libvpx wrapper, with the call
//! settings (real time, CBR, one thread), on the moving test pattern at 640×480 and
//! 1280×720.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use hush_media::video::{EncoderConfig, TestPattern, Vp8Decoder, Vp8Encoder};
use std::hint::black_box;

const SIZES: [(u32, u32, u32); 2] = [(640, 480, 800), (1280, 720, 1500)];
/// Frames cycled through, so that each encode codes motion, not a still picture.
const FRAMES: u64 = 30;

fn encoder(width: u32, height: u32, kbps: u32) -> Vp8Encoder {
    Vp8Encoder::new(EncoderConfig {
        width,
        height,
        fps: 15,
        bitrate_kbps: kbps,
        screen: false,
    })
    .expect("encoder")
}

fn vp8(c: &mut Criterion) {
    let mut g = c.benchmark_group("vp8");
    for (w, h, kbps) in SIZES {
        let pattern = TestPattern::new(w, h, 15).expect("pattern");
        let pictures: Vec<_> = (0..FRAMES).map(|i| pattern.frame(i)).collect();
        let size = format!("{w}x{h}");
        let mut enc = encoder(w, h, kbps);
        let mut i = 0usize;
        g.bench_function(BenchmarkId::new("encode", &size), |b| {
            b.iter(|| {
                i = (i + 1) % pictures.len();
                black_box(enc.encode(&pictures[i], false).expect("encode"))
            })
        });
        // A stream to decode: one key frame, then inter frames, decoded in a loop
        // from the key frame on.
        let mut enc = encoder(w, h, kbps);
        let coded: Vec<Vec<u8>> = pictures
            .iter()
            .flat_map(|p| enc.encode(p, false).expect("encode"))
            .map(|f| f.data)
            .collect();
        let mut dec = Vp8Decoder::new().expect("decoder");
        let mut j = 0usize;
        g.bench_function(BenchmarkId::new("decode", &size), |b| {
            b.iter(|| {
                let out = dec.decode(&coded[j]).expect("decode");
                j = (j + 1) % coded.len();
                black_box(out)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, vp8);
criterion_main!(benches);
