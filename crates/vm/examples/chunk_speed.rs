//! How fast the checkpoint memory path (FastCDC, BLAKE3, zstd, pack
//! writes) runs on one core, without QEMU: chunks N MiB of random or
//! zero-mixed data into a pack under a temporary directory.
//!
//! `cargo run --release -p vgrid-vm --example chunk_speed -- 1024`

use std::time::Instant;

use vgrid_vm::checkpoint::chunks::{ChunkLocator, FilePack, save_stream};

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(512);
    let mut data = vec![0u8; mib << 20];
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for b in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
    }
    let dir = std::env::temp_dir().join(format!("vgrid-chunk-speed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for compress in [true, false] {
        let pack = dir.join(format!("pack-{compress}"));
        let mut sink = FilePack::create(&pack).expect("pack");
        let t = Instant::now();
        let saved =
            save_stream(&data[..], &ChunkLocator::new(), &mut sink, &pack, compress).expect("save");
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{mib} MiB random, compress={compress}: {:.0} MiB/s ({} chunks, {} MiB stored)",
            mib as f64 / secs,
            saved.index.order.len(),
            saved.pack_bytes >> 20
        );
        let _ = std::fs::remove_file(&pack);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
