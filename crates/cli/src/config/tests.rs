use super::*;

/// The shipped example with every commented `# key = value` line made a
/// real one: every key it documents.
fn shipped_example_uncommented() -> String {
    include_str!("../../../../packaging/vgrid.toml")
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest) if rest.split_once(" = ").is_some_and(|(k, _)| is_key(k)) => rest,
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit())
}

fn parse_err(text: &str) -> String {
    format!(
        "{:#}",
        parse(Path::new("/etc/vgrid/vgrid.toml"), text).unwrap_err()
    )
}

#[test]
fn the_shipped_example_sets_every_key_of_every_table() {
    let text = shipped_example_uncommented();
    let cfg = parse(Path::new("vgrid.toml"), &text).unwrap();
    assert_eq!(cfg.serve.listen, Some("127.0.0.1:7777".parse().unwrap()));
    assert_eq!(cfg.serve.lost_after_ms, Some(10_000));
    assert_eq!(cfg.serve.insecure_http, Some(false));
    assert_eq!(
        cfg.agent.controller.as_deref(),
        Some("https://controller.example:7777")
    );
    assert_eq!(cfg.agent.labels.get("rack").map(String::as_str), Some("r1"));
    assert_eq!(cfg.vm.accel, Some(vgrid_vm::Accel::Kvm));
    assert_eq!(cfg.vm.keep_idle_s, Some(300));
    assert_eq!(cfg.scheduler.policy, Some(Policy::Easy));
    assert_eq!(cfg.scheduler.preemption, Some(PreemptionMode::Checkpoint));
    assert_eq!(cfg.scheduler.restore_cost, Some(CostModel::default()));
    // Every key the checker knows is in the example (so in the docs' file).
    for (table, keys) in TABLES.iter().filter(|(t, _)| !t.is_empty()) {
        let (top, inner) = table.split_once('.').unwrap_or((table, ""));
        let value = &text.parse::<toml::Table>().unwrap()[top];
        let value = if inner.is_empty() {
            value
        } else {
            &value[inner]
        };
        for key in *keys {
            assert!(
                value.get(key).is_some(),
                "packaging/vgrid.toml lacks `{table}.{key}`"
            );
        }
    }
}

#[test]
fn the_shipped_example_as_is_is_all_defaults() {
    let text = include_str!("../../../../packaging/vgrid.toml");
    let cfg = parse(Path::new("vgrid.toml"), text).unwrap();
    assert!(cfg.serve.listen.is_none() && cfg.agent.controller.is_none());
    assert!(cfg.scheduler.policy.is_none() && cfg.vm.qemu.is_none());
}

#[test]
fn an_unknown_key_names_file_line_key_and_the_near_one() {
    let err = parse_err("[serve]\ncpus = 2\nlisen = \"0.0.0.0:7777\"\n");
    assert!(
        err.starts_with(
            "/etc/vgrid/vgrid.toml:3: unknown key `serve.lisen` (did you mean `listen`?)"
        ),
        "{err}"
    );
    assert!(
        err.contains("the keys of [serve] are: data_dir, listen"),
        "{err}"
    );
}

#[test]
fn an_unknown_table_is_named_with_its_header_line() {
    let err = parse_err("# comment\n\n[schedular]\npolicy = \"easy\"\n");
    assert!(
        err.starts_with(
            "/etc/vgrid/vgrid.toml:3: unknown key `schedular` (did you mean `scheduler`?)"
        ),
        "{err}"
    );
}

#[test]
fn an_unknown_key_far_from_all_gets_no_guess() {
    let err = parse_err("[vm]\nwhatever = 1\n");
    assert!(
        err.starts_with("/etc/vgrid/vgrid.toml:2: unknown key `vm.whatever`;"),
        "{err}"
    );
    assert!(!err.contains("did you mean"), "{err}");
}

#[test]
fn an_unknown_key_inside_an_inline_table_is_found() {
    let err = parse_err(
        "[scheduler]\npolicy = \"conservative\"\ncheckpoint_cost = { fixed_ms = 5, ms_per_gib = 2 }\n",
    );
    assert!(
        err.starts_with(
            "/etc/vgrid/vgrid.toml:3: unknown key `scheduler.checkpoint_cost.ms_per_gib` (did you mean `ms_per_gb`?)"
        ),
        "{err}"
    );
}

#[test]
fn labels_are_free_form() {
    let cfg = parse(
        Path::new("f"),
        "[agent]\nlabels = { gpu = \"a100\", anything_at_all = \"x\" }\n",
    )
    .unwrap();
    assert_eq!(cfg.agent.labels.len(), 2);
}

#[test]
fn a_value_of_the_wrong_type_names_the_line_and_the_expected_values() {
    let err = parse_err("[scheduler]\n\npolicy = \"eazy\"\n");
    assert!(
        err.starts_with("/etc/vgrid/vgrid.toml: line 3, column 10: unknown variant `eazy`"),
        "{err}"
    );
    assert!(err.contains("`fcfs`, `easy`, `conservative`"), "{err}");
    let err = parse_err("[serve]\ncpus = \"four\"\n");
    assert!(
        err.starts_with("/etc/vgrid/vgrid.toml: line 2, column 8: invalid type"),
        "{err}"
    );
    let err = parse_err("[serve]\nlisten = \"localhost\"\n");
    assert!(err.starts_with("/etc/vgrid/vgrid.toml: line 2"), "{err}");
}

#[test]
fn a_syntax_error_names_the_line() {
    let err = parse_err("[serve]\ncpus = = 2\n");
    assert!(
        err.starts_with("/etc/vgrid/vgrid.toml: line 2, column"),
        "{err}"
    );
}

#[test]
fn a_named_file_that_is_missing_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.toml");
    let arg = ConfigArg {
        path: Some(path.clone()),
    };
    let err = format!("{:#}", arg.load().unwrap_err());
    assert!(
        err.contains(&format!(
            "cannot read the configuration file {}",
            path.display()
        )),
        "{err}"
    );
}

#[test]
fn the_scheduler_table_sets_the_controllers_settings() {
    let cfg = parse(
        Path::new("f"),
        "[scheduler]\npolicy = \"conservative\"\npreemption = \"kill\"\nrestore_cost = { fixed_ms = 100, ms_per_gb = 900 }\n",
    )
    .unwrap();
    let mut controller = vgrid_controller::Config::new(PathBuf::from("/x"));
    cfg.scheduler.apply(&mut controller);
    assert_eq!(controller.policy, Policy::Conservative);
    assert_eq!(controller.preemption, PreemptionMode::Kill);
    assert_eq!(controller.restore_cost.ms_per_gb, 900);
    // Unnamed settings keep the controller's defaults.
    assert_eq!(controller.checkpoint_cost, CostModel::default());
}

#[test]
fn the_vm_table_is_overridden_by_nothing_when_the_environment_is_silent() {
    // Tests run with the environment of `cargo test`, where the VGRID_
    // variables of the VM runtime are unset.
    for var in [
        "VGRID_QEMU",
        "VGRID_ACCEL",
        "VGRID_VM_USER",
        "VGRID_MOUNT_ROOTS",
        "VGRID_KEEP_IDLE_S",
    ] {
        if std::env::var_os(var).is_some() {
            eprintln!("{var} is set: this test checks the file alone");
            return;
        }
    }
    let cfg = parse(
        Path::new("f"),
        "[vm]\nqemu = \"/opt/qemu\"\naccel = \"tcg\"\nuser = \"vm\"\nmount_roots = [\"/srv/a\", \"/srv/b\"]\nkeep_idle_s = 7\n",
    )
    .unwrap();
    let rt = cfg.vm.runtime_config(Path::new("/data")).unwrap();
    assert_eq!(rt.qemu.as_deref(), Some(Path::new("/opt/qemu")));
    assert_eq!(rt.accel, Some(vgrid_vm::Accel::Tcg));
    assert_eq!(rt.vm_user, "vm");
    assert_eq!(
        rt.mount_roots,
        vec![PathBuf::from("/srv/a"), PathBuf::from("/srv/b")]
    );
    let keep = cfg.vm.keep_config().unwrap();
    assert_eq!(keep.idle_timeout, std::time::Duration::from_secs(7));
}

#[test]
fn edit_distance_counts_edits() {
    assert_eq!(edit_distance("listen", "listen"), 0);
    assert_eq!(edit_distance("lisen", "listen"), 1);
    assert_eq!(edit_distance("polcy", "policy"), 1);
    assert_eq!(edit_distance("", "abc"), 3);
    assert_eq!(edit_distance("kitten", "sitting"), 3);
}
