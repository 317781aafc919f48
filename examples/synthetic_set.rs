//! Writes a folder-per-class tree of synthetic PNG images, for benchmarks and
//! for trying convnet on a set of any size without downloading one.
//!
//!     cargo run --release --example synthetic_set -- OUT_DIR [IMAGES] [SIZE] [CLASSES]
//!
//! Defaults: 40,000 images of 256x256 RGB in 8 classes. Each class has its own
//! colour gradient; every image its own offset and a little noise, so PNG
//! compresses them to tens of kilobytes, as it does photographs and scans.
use image::{ImageBuffer, Rgb};
use rayon::prelude::*;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(args.next().ok_or("usage: synthetic_set OUT_DIR [IMAGES] [SIZE] [CLASSES]")?);
    let images: usize = args.next().map_or(Ok(40_000), |s| s.parse())?;
    let size: u32 = args.next().map_or(Ok(256), |s| s.parse())?;
    let classes: usize = args.next().map_or(Ok(8), |s| s.parse())?;
    for class in 0..classes {
        std::fs::create_dir_all(out.join(format!("class{class}")))?;
    }
    (0..images).into_par_iter().try_for_each(|i| -> Result<(), String> {
        let class = i % classes;
        let (offset, phase) = ((i * 7919 % 97) as u32, class as u32 * 37);
        let image = ImageBuffer::from_fn(size, size, |x, y| {
            let noise = ((x * 31 + y * 17 + i as u32 * 13) % 7) as u8;
            let r = ((x + offset + phase) % 256) as u8;
            let g = ((y + offset * 2) % 256) as u8;
            let b = ((x + y + phase * 3) / 2 % 256) as u8;
            Rgb([r.wrapping_add(noise), g, b])
        });
        let path = out.join(format!("class{class}")).join(format!("{i:06}.png"));
        image.save(&path).map_err(|e| format!("{}: {e}", path.display()))
    })?;
    println!("Wrote {images} images of {size}x{size} in {classes} classes to {}", out.display());
    Ok(())
}
