//! `vgrid image`: build, import, list and remove guest images.

use std::path::PathBuf;
use std::process::ExitCode;

use vgrid_image::{BuildOptions, ImageKind, ImageStore};

#[derive(clap::Subcommand)]
pub enum ImageCmd {
    /// Build the stock guest image from Debian packages (cached: rebuilt
    /// only when an input changes).
    Build {
        /// Image name.
        #[arg(default_value = "tiny")]
        name: String,
        /// Where downloaded .deb files are kept (default:
        /// $VGRID_DATA_DIR/cache).
        #[arg(long, env = "VGRID_IMAGE_CACHE")]
        cache_dir: Option<PathBuf>,
        /// Rebuild even if nothing changed.
        #[arg(long)]
        force: bool,
    },
    /// Import a user's disk (qcow2 or raw) booted through firmware.
    Import {
        /// Image name.
        name: String,
        /// The disk file.
        file: PathBuf,
        /// The disk's OS runs the vgrid guest agent.
        #[arg(long)]
        with_agent: bool,
    },
    /// List images.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove an image (refused while a VM uses it).
    Rm {
        /// Image name.
        name: String,
    },
}

pub fn run(cmd: ImageCmd) -> anyhow::Result<ExitCode> {
    let store = ImageStore::open(&crate::data_dir::data_dir()?)?;
    let progress = |line: &str| eprintln!("vgrid image: {line}");
    match cmd {
        ImageCmd::Build {
            name,
            cache_dir,
            force,
        } => {
            let outcome = store.build_stock(
                &name,
                &BuildOptions {
                    cache_dir,
                    agent: None,
                    force,
                    progress: &progress,
                },
            )?;
            print_out(&format!("{}\n", outcome.image.dir.display()));
        }
        ImageCmd::Import {
            name,
            file,
            with_agent,
        } => {
            let image = store.import(&name, &file, with_agent, &progress)?;
            print_out(&format!("{}\n", image.dir.display()));
        }
        ImageCmd::Ls { json } => {
            let entries = store.list()?;
            if json {
                let items: Vec<serde_json::Value> = entries
                    .iter()
                    .map(|e| match &e.image {
                        Ok(img) => serde_json::json!({
                            "name": e.name,
                            "kind": img.kind(),
                            "dir": img.dir,
                            "size": img.size(),
                            "created_unix": img.manifest.created_unix,
                            "has_agent": img.has_agent(),
                            "kernel_version": img.manifest.kernel_version,
                            "inputs_hash": img.manifest.inputs_hash,
                        }),
                        Err(why) => serde_json::json!({"name": e.name, "error": why}),
                    })
                    .collect();
                print_out(&format!("{}\n", serde_json::to_string_pretty(&items)?));
            } else {
                let mut table = format!(
                    "{:<20} {:<9} {:>10} {:<6} DETAIL\n",
                    "NAME", "KIND", "SIZE", "AGENT"
                );
                for e in &entries {
                    match &e.image {
                        Ok(img) => {
                            let kind = match img.kind() {
                                ImageKind::Stock => "stock",
                                ImageKind::Imported => "imported",
                            };
                            let detail = match img.kind() {
                                ImageKind::Stock => format!(
                                    "kernel {}",
                                    img.manifest.kernel_version.as_deref().unwrap_or("?")
                                ),
                                ImageKind::Imported => {
                                    img.manifest.source.clone().unwrap_or_default()
                                }
                            };
                            table += &format!(
                                "{:<20} {:<9} {:>10} {:<6} {detail}\n",
                                e.name,
                                kind,
                                vgrid_image::deb::human(img.size()),
                                if img.has_agent() { "yes" } else { "no" },
                            );
                        }
                        Err(why) => {
                            table += &format!(
                                "{:<20} {:<9} {:>10} {:<6} {why}\n",
                                e.name, "broken", "-", "-"
                            )
                        }
                    }
                }
                print_out(&table);
            }
        }
        ImageCmd::Rm { name } => {
            store.remove(&name)?;
            eprintln!("vgrid image: removed `{name}`");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes to stdout; a closed pipe (`vgrid image ls | head`) is not an error.
fn print_out(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}
