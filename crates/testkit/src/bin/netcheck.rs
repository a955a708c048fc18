//! A tiny probe that the topology's tests run on their hosts
//! (`vgrid_testkit::cluster`): a TCP echo server and clients, and file
//! checks, with errors a test can match. Standard library only.
//!
//! ```text
//! netcheck serve ADDR                 echo every connection back; prints `listening ADDR`
//! netcheck echo ADDR TEXT TIMEOUT_MS  send TEXT, print what comes back
//! netcheck bulk ADDR BYTES TIMEOUT_MS send BYTES, read them back; prints `BYTES MILLISECONDS`
//! netcheck detach                     start a `sleep` in a new process group, print its pid, exit
//! netcheck sleep                      sleep until killed
//! netcheck ls DIR                     the names in DIR, sorted, one a line
//! netcheck read FILE                  print FILE
//! netcheck write FILE TEXT            create FILE holding TEXT
//! ```
//!
//! Failures print `error: <errno name or kind>: <message>` to stderr and
//! exit with status 2.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["serve", addr] => serve(addr),
        ["echo", addr, text, ms] => echo(addr, text, ms),
        ["bulk", addr, bytes, ms] => bulk(addr, bytes, ms),
        ["detach"] => detach(),
        ["sleep"] => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
        ["ls", dir] => ls(dir),
        ["read", file] => std::fs::read(file).and_then(|b| std::io::stdout().write_all(&b)),
        ["write", file, text] => std::fs::write(file, text),
        _ => {
            eprintln!(
                "usage: netcheck serve|echo|bulk|detach|sleep|ls|read|write ... (see its source)"
            );
            return ExitCode::from(64);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}: {e}", errno_name(&e));
            ExitCode::from(2)
        }
    }
}

/// The errno's symbolic name for the errors tests look for, else the kind.
fn errno_name(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(101) => "ENETUNREACH".into(),
        Some(113) => "EHOSTUNREACH".into(),
        Some(111) => "ECONNREFUSED".into(),
        Some(110) => "ETIMEDOUT".into(),
        Some(2) => "ENOENT".into(),
        Some(30) => "EROFS".into(),
        _ => format!("{:?}", e.kind()),
    }
}

fn parse_addr(addr: &str) -> std::io::Result<SocketAddr> {
    addr.parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{addr}: {e}")))
}

fn parse_num(n: &str) -> std::io::Result<u64> {
    n.parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{n}: {e}")))
}

fn serve(addr: &str) -> std::io::Result<()> {
    let listener = TcpListener::bind(parse_addr(addr)?)?;
    println!("listening {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    for conn in listener.incoming() {
        let mut conn = conn?;
        std::thread::spawn(move || {
            let mut back = conn.try_clone().expect("clone a socket");
            let _ = std::io::copy(&mut conn, &mut back);
            let _ = back.shutdown(Shutdown::Write);
        });
    }
    Ok(())
}

fn connect(addr: &str, ms: &str) -> std::io::Result<TcpStream> {
    let limit = Duration::from_millis(parse_num(ms)?);
    let stream = TcpStream::connect_timeout(&parse_addr(addr)?, limit)?;
    stream.set_read_timeout(Some(limit))?;
    stream.set_write_timeout(Some(limit))?;
    Ok(stream)
}

fn echo(addr: &str, text: &str, ms: &str) -> std::io::Result<()> {
    let mut stream = connect(addr, ms)?;
    stream.write_all(text.as_bytes())?;
    stream.shutdown(Shutdown::Write)?;
    let mut back = String::new();
    stream.read_to_string(&mut back)?;
    print!("{back}");
    Ok(())
}

fn bulk(addr: &str, bytes: &str, ms: &str) -> std::io::Result<()> {
    let total = parse_num(bytes)?;
    let mut stream = connect(addr, ms)?;
    let mut reader = stream.try_clone()?;
    let started = Instant::now();
    let counter = std::thread::spawn(move || -> std::io::Result<u64> {
        let mut sink = std::io::sink();
        std::io::copy(&mut reader, &mut sink)
    });
    let chunk = vec![0u8; 64 * 1024];
    let mut left = total;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        stream.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    stream.shutdown(Shutdown::Write)?;
    let got = counter.join().expect("the reader thread")?;
    if got != total {
        return Err(std::io::Error::other(format!(
            "sent {total} bytes, got {got} back"
        )));
    }
    println!("{total} {}", started.elapsed().as_millis());
    Ok(())
}

fn detach() -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    let child = std::process::Command::new(std::env::current_exe()?)
        .arg("sleep")
        .process_group(0)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    println!("{}", child.id());
    // Not waited for: it outlives this process, as a daemon would.
    drop(child);
    Ok(())
}

fn ls(dir: &str) -> std::io::Result<()> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    names.sort();
    for n in names {
        println!("{n}");
    }
    Ok(())
}
