//! Test images for the engine's integration tests.

use std::path::{Path, PathBuf};

/// Writes `dir/disk.img`: `len` bytes of incompressible-looking data, the same every time.
pub fn noise_image(dir: &Path, len: u32) -> PathBuf {
    let image = dir.join("disk.img");
    let data: Vec<u8> = (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&image, data).unwrap();
    image
}
