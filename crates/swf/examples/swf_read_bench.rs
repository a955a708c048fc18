//! Times reading SWF files: into records, straight into jobs (the
//! simulator's path), and decompression and parsing separately.
//! `cargo run --release -p vgrid-swf --example swf_read_bench -- FILE... [--repeat N]`
//! Build with `--no-default-features` to measure flate2's default inflate
//! backend instead of zlib-rs.

use std::time::Instant;

fn main() {
    let mut files = Vec::new();
    let mut repeat = 5usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--repeat" {
            repeat = args.next().and_then(|v| v.parse().ok()).unwrap_or(5);
        } else {
            files.push(a);
        }
    }
    let backend = if cfg!(feature = "fast-inflate") {
        "zlib-rs"
    } else {
        "miniz_oxide"
    };
    println!("file,backend,records_ms_best,jobs_ms_best,inflate_ms_best,parse_ms_best,jobs");
    for f in files {
        let mut best = f64::INFINITY;
        let mut jobs = 0;
        for _ in 0..repeat {
            let t0 = Instant::now();
            match vgrid_swf::read_path(std::path::Path::new(&f), vgrid_swf::Mode::Strict) {
                Ok(t) => jobs = t.records.len(),
                Err(e) => {
                    eprintln!("{e}");
                    std::process::exit(1);
                }
            }
            best = best.min(t0.elapsed().as_secs_f64() * 1e3);
        }
        // The simulator's path: straight into compact jobs.
        let mut best_jobs = f64::INFINITY;
        for _ in 0..repeat {
            let t0 = Instant::now();
            let loaded =
                vgrid_swf::Workload::read(std::path::Path::new(&f), None, vgrid_swf::Mode::Strict);
            if let Err(e) = loaded {
                eprintln!("{e}");
                std::process::exit(1);
            }
            best_jobs = best_jobs.min(t0.elapsed().as_secs_f64() * 1e3);
        }
        let data = std::fs::read(&f).unwrap_or_default();
        let mut best_inflate = f64::INFINITY;
        let mut best_parse = f64::INFINITY;
        for _ in 0..repeat {
            let t0 = Instant::now();
            let mut plain = Vec::new();
            use std::io::Read;
            if flate2::read::MultiGzDecoder::new(&data[..])
                .read_to_end(&mut plain)
                .is_err()
            {
                plain = data.clone();
            }
            best_inflate = best_inflate.min(t0.elapsed().as_secs_f64() * 1e3);
            let t1 = Instant::now();
            let _ = vgrid_swf::parse(&plain, &f, vgrid_swf::Mode::Strict);
            best_parse = best_parse.min(t1.elapsed().as_secs_f64() * 1e3);
        }
        println!("{f},{backend},{best:.1},{best_jobs:.1},{best_inflate:.1},{best_parse:.1},{jobs}");
    }
}
