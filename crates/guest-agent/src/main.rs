//! The guest agent: runs inside the VM, runs the job's command and reports
//! its output and exit status to the host.

fn main() {
    eprintln!("vgrid-guest-agent: runs inside a vgrid guest");
    std::process::exit(2);
}
