//! A camera's picture into I420, per layout a camera gives (YUYV, the common one; NV12;
//! I420 itself, a plain copy), at 640×480 and 1280×720: the cost the media thread pays
//! for each picture it sends, before VP8.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use hush_media::camera::{Captured, PixelLayout, to_i420};
use std::hint::black_box;

fn camera(c: &mut Criterion) {
    let mut g = c.benchmark_group("camera");
    for (w, h) in [(640usize, 480usize), (1280, 720)] {
        for layout in [PixelLayout::Yuyv, PixelLayout::Nv12, PixelLayout::I420] {
            let stride = layout.min_stride(w);
            let bytes = layout.picture_bytes(stride, h).expect("size");
            let data: Vec<u8> = (0..bytes).map(|i| (i * 31 % 251) as u8).collect();
            let picture = Captured {
                data: &data,
                size: (w as u32, h as u32),
                stride,
                layout,
            };
            g.bench_function(
                BenchmarkId::new(format!("{layout:?}"), format!("{w}x{h}")),
                |b| b.iter(|| black_box(to_i420(black_box(&picture)).expect("converts"))),
            );
        }
    }
    g.finish();
}

criterion_group!(benches, camera);
criterion_main!(benches);
