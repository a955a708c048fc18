//! Measures the stock image's boot: from spawning QEMU to the guest agent's
//! `Started` frame (the command running), and the guest's own uptime at
//! that moment. With `--compare-kernel PATH`, runs alternate between the
//! image's kernel and PATH (e.g. Debian's compressed `vmlinuz`), so that both
//! see the same machine load.
//!
//! ```sh
//! cargo run --release -p vgrid-image --example boot_time -- --runs 5 \
//!     [--compare-kernel /tmp/k/boot/vmlinuz-6.1.0-57-amd64]
//! ```

use std::path::PathBuf;
use std::time::Duration;

use vgrid_guest_proto::{GuestMessage, JobContext};
use vgrid_testkit::handboot::{Options, boot, setup};

struct Sample {
    to_command: Duration,
    guest_uptime: Option<f64>,
}

fn main() {
    let mut runs = 5usize;
    let mut compare: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => {
                runs = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| usage("--runs needs a number"));
            }
            "--compare-kernel" => {
                compare = Some(
                    args.next()
                        .map(PathBuf::from)
                        .unwrap_or_else(|| usage("--compare-kernel needs a path")),
                );
            }
            other => usage(&format!("unknown argument {other}")),
        }
    }
    let Some((qemu, image)) = setup() else {
        eprintln!("boot_time: QEMU or the stock image is missing");
        std::process::exit(1);
    };
    let own = image.image.kernel().expect("the stock image has a kernel");
    let mut kernels = vec![own];
    kernels.extend(compare);
    let mut samples: Vec<Vec<Sample>> = kernels.iter().map(|_| Vec::new()).collect();
    let mut ctx = JobContext::new(vec!["true".into()], "bench");
    ctx.network = false;
    for run in 0..runs {
        for (k, kernel) in kernels.iter().enumerate() {
            let finished = boot(
                &qemu,
                &image,
                Some(&ctx),
                Options {
                    kernel: Some(kernel.clone()),
                    ..Options::default()
                },
            );
            let to_command = finished.to_command.expect("the command started");
            let guest_uptime = finished.messages.iter().find_map(|m| match m {
                GuestMessage::Log { message } if message.starts_with("command started") => message
                    .split(" at ")
                    .nth(1)
                    .and_then(|t| t.split_whitespace().next())
                    .and_then(|t| t.parse().ok()),
                _ => None,
            });
            println!(
                "run {} kernel {}: QEMU start to command {:.2} s, guest uptime {}",
                run + 1,
                kernel.display(),
                to_command.as_secs_f64(),
                guest_uptime.map_or("?".into(), |u: f64| format!("{u:.2} s"))
            );
            samples[k].push(Sample {
                to_command,
                guest_uptime,
            });
        }
    }
    println!(
        "\nkernel | runs | median | min | max (QEMU start to command, s) | median guest uptime (s)"
    );
    for (kernel, s) in kernels.iter().zip(&samples) {
        let mut t: Vec<f64> = s.iter().map(|x| x.to_command.as_secs_f64()).collect();
        t.sort_by(f64::total_cmp);
        let mut u: Vec<f64> = s.iter().filter_map(|x| x.guest_uptime).collect();
        u.sort_by(f64::total_cmp);
        println!(
            "{} | {} | {:.2} | {:.2} | {:.2} | {}",
            kernel.display(),
            t.len(),
            t[t.len() / 2],
            t[0],
            t[t.len() - 1],
            u.get(u.len() / 2).map_or("?".into(), |m| format!("{m:.2}"))
        );
    }
}

fn usage(why: &str) -> ! {
    eprintln!("boot_time: {why}\nusage: boot_time [--runs N] [--compare-kernel PATH]");
    std::process::exit(2);
}
