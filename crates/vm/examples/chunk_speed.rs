//! How fast the checkpoint memory path (FastCDC, BLAKE3, zstd, pack
//! writes and the final fsync) runs without QEMU: each piece alone on one
//! core, then the whole four-thread pipeline on N MiB of random data into
//! a pack under a temporary directory, with each stage's busy time.
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
    let t = Instant::now();
    let h = blake3::hash(&data);
    println!(
        "blake3 alone: {:.0} MiB/s ({})",
        mib as f64 / t.elapsed().as_secs_f64(),
        &h.to_hex()[..8]
    );
    let t = Instant::now();
    let n = fastcdc::v2020::StreamCDC::new(&data[..], 16384, 65536, 262144).count();
    println!(
        "StreamCDC alone: {:.0} MiB/s ({n} chunks)",
        mib as f64 / t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let n = fastcdc::v2020::FastCDC::new(&data[..], 16384, 65536, 262144).count();
    println!(
        "FastCDC (slice) alone: {:.0} MiB/s ({n} chunks)",
        mib as f64 / t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let c = zstd::bulk::compress(&data[..64 << 20], 1).unwrap().len();
    println!(
        "zstd -1 on 64 MiB random: {:.0} MiB/s ({c})",
        64.0 / t.elapsed().as_secs_f64()
    );
    let mut z = zstd::bulk::Compressor::new(1).expect("zstd");
    let t = Instant::now();
    let mut total = 0;
    for c in data.chunks(65536) {
        let mid = c.len() / 2;
        total += z
            .compress(&c[mid - 2048..mid + 2048])
            .map(|v| v.len())
            .unwrap_or(0);
    }
    println!(
        "4 KiB samples of 64 KiB chunks: {:.0} MiB/s of chunks ({total})",
        mib as f64 / t.elapsed().as_secs_f64()
    );
    let dir = std::env::temp_dir().join(format!("vgrid-chunk-speed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    // Compressible memory: every other 4 KiB page holds short repeated
    // records (like page tables, text or zeroed structures with a few
    // fields), the others stay random.
    let mut mixed = data.clone();
    for (i, page) in mixed.chunks_mut(4096).enumerate().step_by(2) {
        for (j, b) in page.iter_mut().enumerate() {
            *b = if j % 64 < 8 {
                (i + j / 64) as u8
            } else {
                (j % 7) as u8
            };
        }
    }
    for (what, stream, compress) in [
        ("random", &data, true),
        ("random", &data, false),
        ("half compressible", &mixed, true),
    ] {
        let pack = dir.join(format!("pack-{compress}"));
        let mut sink = FilePack::create(&pack).expect("pack");
        let t = Instant::now();
        let saved = save_stream(
            &stream[..],
            &ChunkLocator::new(),
            &mut sink,
            &pack,
            compress,
        )
        .expect("save");
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{mib} MiB {what}, compress={compress}, {} MiB direct IO: {:.0} MiB/s ({} chunks, {} compressed, {} MiB stored; {:?})",
            sink.direct_bytes() >> 20,
            mib as f64 / secs,
            saved.index.order.len(),
            saved.index.stored.iter().filter(|c| c.compressed).count(),
            saved.pack_bytes >> 20,
            saved.stages
        );
        let _ = std::fs::remove_file(&pack);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
