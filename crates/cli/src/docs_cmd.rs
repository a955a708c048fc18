//! `vgrid completions SHELL` and the hidden `vgrid man DIR`: shell
//! completions and man pages made from the command-line definition itself,
//! so they cannot drift from it. The package build (scripts/package.sh)
//! calls both.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

/// Print the completion script of a shell.
#[derive(clap::Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    shell: clap_complete::Shell,
}

/// Write the man pages (section 1) into a directory.
#[derive(clap::Args)]
pub struct ManArgs {
    /// The directory, created when missing.
    dir: std::path::PathBuf,
}

pub fn completions(mut cmd: clap::Command, args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    let name = cmd.get_name().to_string();
    clap_complete::generate(args.shell, &mut cmd, name, &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}

pub fn man(mut cmd: clap::Command, args: ManArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    cmd.build();
    let written = write_pages(&cmd, cmd.get_name(), &args.dir)?;
    eprintln!("vgrid: wrote {written} man pages to {}", args.dir.display());
    Ok(ExitCode::SUCCESS)
}

/// Writes `name.1` for `cmd` and `name-sub.1` for each visible subcommand,
/// down the tree (`vgrid-users-add.1`); returns how many.
fn write_pages(cmd: &clap::Command, name: &str, dir: &Path) -> anyhow::Result<usize> {
    let page = cmd.clone().name(name.to_string());
    let path = dir.join(format!("{name}.1"));
    let mut out = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut out)
        .with_context(|| format!("cannot render {}", path.display()))?;
    std::fs::write(&path, out).with_context(|| format!("cannot write {}", path.display()))?;
    let mut written = 1;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        written += write_pages(sub, &format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(written)
}
