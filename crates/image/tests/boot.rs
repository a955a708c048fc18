//! Boots the stock image with real QEMU (TCG here, 256 MB) and the guest
//! agent, using hand-written QEMU arguments (`vgrid_testkit::handboot`; the
//! product's launcher lives in `vgrid-vm`), and checks what arrives through
//! the `org.vgrid.out` port.

use std::io::Write;

use vgrid_guest_proto::{
    ExitStatus, GuestMessage, HostMessage, JobContext, Mount, StagingPhase, User,
};
use vgrid_testkit::handboot::{Options, SendWhen, Share, boot, setup};
use vgrid_testkit::{exit_of, stderr_of, stdout_of, temp_dir};

fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

#[test]
fn command_output_and_exit_status_arrive_through_the_port() {
    let Some((qemu, image)) = setup() else { return };
    let mut ctx = JobContext::new(
        sh("echo hello from $(hostname); echo to stderr >&2"),
        "vm-one",
    );
    ctx.network = false;
    let run = boot(&qemu, &image, Some(&ctx), Options::default());
    assert_eq!(stdout_of(&run.messages), "hello from vm-one\n");
    assert_eq!(stderr_of(&run.messages), "to stderr\n");
    assert_eq!(
        run.exit(),
        ExitStatus {
            code: Some(0),
            signal: None
        }
    );
    assert!(run.errors().is_empty(), "agent errors: {:?}", run.errors());
    // The protocol's order: Hello first, Started before output, Exited last
    // of the command's messages.
    assert!(matches!(
        run.messages[0],
        GuestMessage::Hello { protocol: 1, .. }
    ));
    let pos = |f: &dyn Fn(&GuestMessage) -> bool| run.messages.iter().position(f).unwrap();
    let started = pos(&|m| matches!(m, GuestMessage::Started { .. }));
    let first_out = pos(&|m| matches!(m, GuestMessage::Stdout(_)));
    let exited = pos(&|m| matches!(m, GuestMessage::Exited(_)));
    assert!(started < first_out && first_out < exited);
    eprintln!(
        "measured: QEMU start to command running: {:.2} s (TCG, 256 MB, 1 vCPU)",
        run.to_command.expect("Started seen").as_secs_f64()
    );
}

#[test]
fn a_failing_command_reports_its_non_zero_status() {
    let Some((qemu, image)) = setup() else { return };
    let mut ctx = JobContext::new(sh("echo partial; exit 3"), "vm-fail");
    ctx.network = false;
    let run = boot(&qemu, &image, Some(&ctx), Options::default());
    assert_eq!(stdout_of(&run.messages), "partial\n");
    assert_eq!(
        run.exit(),
        ExitStatus {
            code: Some(3),
            signal: None
        }
    );
}

#[test]
fn a_command_that_does_not_exist_ends_with_127_and_an_agent_error() {
    let Some((qemu, image)) = setup() else { return };
    let mut ctx = JobContext::new(vec!["/no/such/program".into()], "vm-missing");
    ctx.network = false;
    let run = boot(&qemu, &image, Some(&ctx), Options::default());
    assert_eq!(run.exit().code, Some(127));
    let errors = run.errors();
    assert!(
        errors.iter().any(|e| e.contains("/no/such/program")),
        "errors: {errors:?}"
    );
}

#[test]
fn the_command_runs_as_the_given_user_with_its_environment() {
    let Some((qemu, image)) = setup() else { return };
    let mut ctx = JobContext::new(
        sh(
            "echo uid=$(id -u) user=$(id -un) gid=$(id -g) pwd=$(pwd) home=$HOME foo=$FOO greeting=\"$GREETING\"; touch mine && stat -c %u mine",
        ),
        "vm-user",
    );
    ctx.network = false;
    ctx.user = Some(User {
        name: "alice".into(),
        uid: Some(1234),
        gid: None,
    });
    ctx.env.insert("FOO".into(), "bar".into());
    ctx.env
        .insert("GREETING".into(), "hello world; $(not run)".into());
    let run = boot(&qemu, &image, Some(&ctx), Options::default());
    assert_eq!(
        stdout_of(&run.messages),
        "uid=1234 user=alice gid=1234 pwd=/work/home/alice home=/work/home/alice foo=bar greeting=hello world; $(not run)\n1234\n"
    );
    assert_eq!(run.exit().code, Some(0));
}

#[test]
fn the_scratch_disk_grows_to_the_overlay_size() {
    let Some((qemu, image)) = setup() else { return };
    let mut ctx = JobContext::new(sh("df -k /work | tail -n 1"), "vm-disk");
    ctx.network = false;
    let opts = Options {
        overlay_size: Some("3G"),
        ..Options::default()
    };
    let run = boot(&qemu, &image, Some(&ctx), opts);
    let out = stdout_of(&run.messages);
    let total_kib: u64 = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("unexpected df output {out:?}"));
    // 3 GiB minus ext4's own metadata; the base disk is 1 GiB.
    assert!(total_kib > 2_900_000, "/work has {total_kib} KiB: {out}");
}

#[test]
fn a_9p_data_repository_is_readable_in_the_guest() {
    let Some((qemu, image)) = setup() else { return };
    let data = temp_dir();
    std::fs::create_dir_all(data.path().join("sub")).unwrap();
    std::fs::write(data.path().join("sub/records.txt"), "42 records\n").unwrap();
    let mut ctx = JobContext::new(
        sh(
            "cat /data/sub/records.txt; touch /data/new 2>/dev/null && echo writable || echo read-only",
        ),
        "vm-9p",
    );
    ctx.network = false;
    ctx.mounts.push(Mount {
        tag: "data0".into(),
        guest_path: "/data".into(),
        readonly: true,
    });
    let opts = Options {
        shares: vec![Share {
            tag: "data0",
            host: data.path().to_path_buf(),
            readonly: true,
        }],
        ..Options::default()
    };
    let run = boot(&qemu, &image, Some(&ctx), opts);
    assert_eq!(stdout_of(&run.messages), "42 records\nread-only\n");
    assert!(!data.path().join("new").exists());
    assert_eq!(run.exit().code, Some(0));
}

#[test]
fn staged_inputs_come_in_and_outputs_go_out() {
    let Some((qemu, image)) = setup() else { return };
    let stage = temp_dir();
    std::fs::create_dir_all(stage.path().join("in")).unwrap();
    std::fs::write(stage.path().join("in/numbers.txt"), "1\n2\n3\n").unwrap();
    let mut ctx = JobContext::new(
        sh(
            "mount | grep -c ' type 9p ' ; mkdir -p results && awk '{s+=$1} END {print s}' in/numbers.txt > results/sum.txt",
        ),
        "vm-stage",
    );
    ctx.network = false;
    ctx.user = Some(User {
        name: "bob".into(),
        uid: None,
        gid: None,
    });
    ctx.staging = Some(vgrid_guest_proto::Staging {
        tag: "stage".into(),
        inputs: vec!["in".into()],
        outputs: vec!["missing.txt".into(), "results".into()],
    });
    let opts = Options {
        shares: vec![Share {
            tag: "stage",
            host: stage.path().to_path_buf(),
            readonly: false,
        }],
        ..Options::default()
    };
    let run = boot(&qemu, &image, Some(&ctx), opts);
    assert_eq!(run.exit().code, Some(0), "errors: {:?}", run.errors());
    // An output the command did not produce is reported; the others are
    // still staged out.
    let errors = run.errors();
    assert_eq!(errors.len(), 1, "errors: {errors:?}");
    assert!(errors[0].contains("missing.txt"), "errors: {errors:?}");
    // While the command ran no 9p share was mounted (so the VM could have
    // been checkpointed).
    assert_eq!(stdout_of(&run.messages), "0\n");
    assert_eq!(
        std::fs::read_to_string(stage.path().join("results/sum.txt")).unwrap(),
        "6\n"
    );
    let staged: Vec<(StagingPhase, String)> = run
        .messages
        .iter()
        .filter_map(|m| match m {
            GuestMessage::Staging { phase, path, .. } => Some((*phase, path.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        staged,
        vec![
            (StagingPhase::In, "in".to_string()),
            (StagingPhase::Out, "results".to_string())
        ]
    );
}

#[test]
fn a_graceful_stop_terminates_the_command_and_powers_off() {
    let Some((qemu, image)) = setup() else { return };
    let mut ctx = JobContext::new(
        sh("trap 'echo got TERM; exit 7' TERM; echo running; while true; do sleep 1; done"),
        "vm-stop",
    );
    ctx.network = false;
    let opts = Options {
        send: Some(SendWhen {
            after_stdout: "running",
            message: HostMessage::Stop { grace_secs: 30 },
        }),
        ..Options::default()
    };
    let run = boot(&qemu, &image, Some(&ctx), opts);
    assert_eq!(stdout_of(&run.messages), "running\ngot TERM\n");
    assert_eq!(
        run.exit(),
        ExitStatus {
            code: Some(7),
            signal: None
        }
    );
}

#[test]
fn a_command_ignoring_sigterm_is_killed_after_the_grace_period() {
    let Some((qemu, image)) = setup() else { return };
    let mut ctx = JobContext::new(
        sh("trap '' TERM; echo stubborn; while true; do sleep 1; done"),
        "vm-kill",
    );
    ctx.network = false;
    let opts = Options {
        send: Some(SendWhen {
            after_stdout: "stubborn",
            message: HostMessage::Stop { grace_secs: 1 },
        }),
        ..Options::default()
    };
    let run = boot(&qemu, &image, Some(&ctx), opts);
    assert_eq!(
        run.exit(),
        ExitStatus {
            code: None,
            signal: Some(9)
        }
    );
}

#[test]
fn the_host_sets_the_guest_clock() {
    let Some((qemu, image)) = setup() else { return };
    // 2033-05-18: far from the host's clock, so the change is unmistakable.
    let target_ms: u64 = 2_000_000_000_000;
    let mut ctx = JobContext::new(
        sh("echo ready; while [ $(date +%s) -lt 2000000000 ]; do sleep 0.2; done; date -u +%Y"),
        "vm-clock",
    );
    ctx.network = false;
    let opts = Options {
        send: Some(SendWhen {
            after_stdout: "ready",
            message: HostMessage::SetClock { unix_ms: target_ms },
        }),
        ..Options::default()
    };
    let run = boot(&qemu, &image, Some(&ctx), opts);
    assert_eq!(stdout_of(&run.messages), "ready\n2033\n");
    assert_eq!(run.exit().code, Some(0));
}

#[test]
fn the_network_comes_up_with_dhcp_and_reaches_the_host_through_passt() {
    let Some((qemu, image)) = setup() else { return };
    // A one-shot HTTP server on the host's loopback; passt maps the guest's
    // gateway address to the host.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        use std::io::Read;
        let (mut conn, _) = listener.accept().unwrap();
        let mut request = [0u8; 1024];
        let _ = conn.read(&mut request);
        conn.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 14\r\n\r\nhello, guest!\n")
            .unwrap();
    });
    let script = format!(
        "ip -4 -o addr show | grep -v ' lo ' | wc -l; ip -4 route | grep -c '^default'; \
         grep -c nameserver /etc/resolv.conf; \
         gw=$(ip -4 route | awk '/^default/ {{print $3}}'); wget -q -O - http://$gw:{port}/"
    );
    let ctx = JobContext::new(sh(&script), "vm-net");
    let opts = Options {
        network: true,
        ..Options::default()
    };
    let run = boot(&qemu, &image, Some(&ctx), opts);
    assert!(run.errors().is_empty(), "agent errors: {:?}", run.errors());
    let out = stdout_of(&run.messages);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "unexpected output {out:?}");
    assert_eq!(lines[0].trim(), "1", "one IPv4 address on the NIC: {out:?}");
    assert_eq!(lines[1].trim(), "1", "a default route: {out:?}");
    assert_ne!(lines[2].trim(), "0", "a DNS server from DHCP: {out:?}");
    assert_eq!(lines[3], "hello, guest!", "the host answered: {out:?}");
    server.join().unwrap();
}

#[test]
fn without_a_context_the_agent_says_so_and_powers_off() {
    let Some((qemu, image)) = setup() else { return };
    let run = boot(&qemu, &image, None, Options::default());
    assert!(exit_of(&run.messages).is_none());
    let errors = run.errors();
    assert!(
        errors.iter().any(|e| e.contains("no job context")),
        "errors: {errors:?}"
    );
    assert!(
        run.console.contains("no job context"),
        "console:\n{}",
        run.console
    );
}
