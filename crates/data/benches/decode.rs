//! Images decoded + resized per second.
use convnet_data::decode::{decode_into, DecodeOptions};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::path::Path;

fn png_bytes(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 7) as u8, (y * 3) as u8, ((x ^ y) & 0xff) as u8])
    });
    let mut bytes = Vec::new();
    image::DynamicImage::ImageRgb8(image)
        .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
        .expect("encode");
    bytes
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_resize");
    group.throughput(Throughput::Elements(1));
    for (name, w, h, size) in [("png_512_to_224_rgb", 512, 512, 224), ("png_28_to_28_gray", 28, 28, 28)] {
        let bytes = png_bytes(w, h);
        let mut options =
            DecodeOptions::new(convnet_data::InputFormat::new([size, size], convnet_data::ColorMode::Rgb));
        if size == 28 {
            options.format.color_mode = convnet_data::ColorMode::Grayscale;
        }
        let mut out = vec![0u8; options.image_len()];
        group.bench_function(name, |b| {
            b.iter(|| decode_into(Path::new("bench.png"), &bytes, &options, &mut out).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
