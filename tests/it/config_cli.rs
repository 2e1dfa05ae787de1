//! The `peercam` binary's command line and config checking, run as a user would.

use std::path::Path;

use crate::common::cli::{peercam, repo_file, text};

#[test]
fn version_prints_the_crate_version() {
    let out = peercam(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout).trim(),
        format!("peercam {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn help_mentions_check_config_and_the_options() {
    let out = peercam(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for word in ["check-config", "--config", "--listen", "--version"] {
        assert!(help.contains(word), "--help lacks {word}:\n{help}");
    }
}

#[test]
fn check_config_accepts_the_sample_file() {
    let sample = repo_file("config/peercam.toml");
    let out = peercam(&["check-config", sample.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        format!("{}: ok", sample.display())
    );
}

#[test]
fn check_config_uses_the_config_flag_when_no_path_is_given() {
    let fixture = repo_file("tests/fixtures/config/loopback.toml");
    let out = peercam(&[
        "--config",
        fixture.to_str().expect("utf-8 path"),
        "check-config",
    ]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        format!("{}: ok", fixture.display())
    );
}

/// Runs `check-config` on a bad fixture: exit 2, and stderr is `path:line:col: ...`.
fn check_bad(fixture: &str) -> String {
    let path = repo_file(fixture);
    let out = peercam(&["check-config", path.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(2), "stdout: {}", text(&out.stdout));
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout: {}",
        text(&out.stdout)
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!("{}:", path.display())),
        "{stderr}"
    );
    stderr
}

#[test]
fn check_config_reports_a_range_error_with_place_key_and_range() {
    let stderr = check_bad("tests/fixtures/config/bad-width.toml");
    assert!(
        stderr.contains(":7:9: [video] width = 641: expected an even number from 160 to 3840"),
        "{stderr}"
    );
}

#[test]
fn check_config_reports_an_unknown_key() {
    let stderr = check_bad("tests/fixtures/config/unknown-key.toml");
    assert!(
        stderr.contains(":3:1: unknown key [video] colour; expected one of: source, format, width"),
        "{stderr}"
    );
}

#[test]
fn check_config_reports_a_syntax_error_with_line_and_column() {
    let stderr = check_bad("tests/fixtures/config/syntax-error.toml");
    assert!(stderr.contains(":3:12: invalid TOML"), "{stderr}");
}

#[test]
fn check_config_on_a_missing_file_fails() {
    let out = peercam(&["check-config", "/nonexistent/peercam.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read config file /nonexistent/peercam.toml"));
}

#[test]
fn daemon_refuses_to_start_with_a_bad_config() {
    let path = repo_file("tests/fixtures/config/bad-width.toml");
    let out = peercam(&["--config", path.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("[video] width = 641"), "{stderr}");
    assert!(stderr.contains("not starting"), "{stderr}");
    assert!(
        !stderr.contains("listening"),
        "the daemon must not start: {stderr}"
    );
}

#[test]
fn bad_listen_flag_is_a_usage_error() {
    let out = peercam(&["--listen", "localhost"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--listen"));
}

/// Starts the daemon, collects its log until it says where it listens (or 30 s pass), then
/// stops it. Returns the log lines.
fn start_and_stop(args: &[&str]) -> Vec<String> {
    use std::time::Duration;

    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
    let (mut child, rx) = crate::common::spawn(&args, &[]);
    let mut lines = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) {
        let done = line.contains("listening on");
        lines.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    lines
}

#[test]
fn daemon_logs_its_config_file_and_the_listen_override() {
    let path = repo_file("tests/fixtures/config/loopback.toml");
    let lines = start_and_stop(&[
        "--config",
        path.to_str().expect("utf-8 path"),
        "--listen",
        "127.0.0.1:0",
    ]);
    let log = lines.join("\n");
    assert!(
        log.contains(&format!("configuration: {}", path.display())),
        "{log}"
    );
    assert!(
        log.contains("--listen 127.0.0.1:0 overrides [server] listen"),
        "{log}"
    );
    assert!(log.contains("listening on 127.0.0.1:"), "{log}");
    assert!(log.contains("(http): open http://127.0.0.1:"), "{log}");
    // Log lines read `<time> <LEVEL> <target>: <message>`.
    let line = lines
        .iter()
        .find(|l| l.contains("configuration: "))
        .expect("configuration line");
    assert!(
        line.contains(" INFO  peercam::cli: configuration: "),
        "{line}"
    );
}

#[test]
fn daemon_without_config_uses_the_built_in_defaults() {
    if Path::new("/etc/peercam/peercam.toml").exists() {
        eprintln!("skipped: /etc/peercam/peercam.toml exists on this machine");
        return;
    }
    let lines = start_and_stop(&["--listen", "127.0.0.1:0"]);
    let log = lines.join("\n");
    assert!(
        log.contains("configuration: built-in defaults (/etc/peercam/peercam.toml does not exist)"),
        "{log}"
    );
    assert!(log.contains("listening on 127.0.0.1:"), "{log}");
}

/// The manual page (deploy/peercam.1, installed by the .deb) describes every option,
/// subcommand and config key, and carries the crate's version.
#[test]
fn man_page_covers_every_option_command_and_config_key() {
    use clap::CommandFactory;
    let page =
        std::fs::read_to_string(repo_file("deploy/peercam.1")).expect("read deploy/peercam.1");
    // roff writes a literal minus as \-.
    let roff = |s: &str| s.replace('-', "\\-");
    let mut missing = Vec::new();
    let cli = peercam::cli::Cli::command();
    let mut commands = vec![&cli];
    commands.extend(cli.get_subcommands());
    for command in commands {
        if command.get_name() != "peercam" && !page.contains(&roff(command.get_name())) {
            missing.push(format!("command {}", command.get_name()));
        }
        for arg in command.get_arguments() {
            if let Some(long) = arg.get_long() {
                if !page.contains(&roff(&format!("--{long}"))) {
                    missing.push(format!("option --{long}"));
                }
            }
        }
    }
    let sample = std::fs::read_to_string(repo_file("config/peercam.toml")).expect("read sample");
    let sample: toml::Table = sample.parse().expect("sample config parses");
    for (section, keys) in &sample {
        if !page.contains(&format!("[{section}]")) {
            missing.push(format!("section [{section}]"));
        }
        for key in keys.as_table().expect("sections are tables").keys() {
            if !page.contains(&format!(".B {key}")) && !page.contains(&format!(".BR {key}")) {
                missing.push(format!("key [{section}] {key}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "deploy/peercam.1 does not describe: {missing:?}"
    );
    let version = format!("\"peercam {}\"", env!("CARGO_PKG_VERSION"));
    assert!(page.contains(&version), "the .TH line should say {version}");
}

/// The systemd units the .deb installs (deploy/*.service) pass `systemd-analyze verify`
/// without a complaint about them (ExecStart pointed at the built binary, which the check
/// needs to exist); the relay's unit is shipped but not enabled. Skipped, saying so, where
/// systemd-analyze is not installed.
#[test]
fn systemd_units_verify_and_the_relay_unit_is_shipped_disabled() {
    let dir = tempfile::tempdir().expect("tempdir");
    for unit in ["peercam.service", "peercam-relay.service"] {
        let unit_text = std::fs::read_to_string(repo_file(&format!("deploy/{unit}")))
            .unwrap_or_else(|e| panic!("read deploy/{unit}: {e}"));
        assert!(unit_text.contains("ExecStart=/usr/bin/peercam"), "{unit}");
        assert!(
            unit_text.contains("ExecReload=/bin/kill -HUP $MAINPID"),
            "{unit}"
        );
        let local = unit_text.replace("/usr/bin/peercam", env!("CARGO_BIN_EXE_peercam"));
        let path = dir.path().join(unit);
        std::fs::write(&path, local).expect("write unit");
        let out = match std::process::Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()
        {
            Ok(out) => out,
            Err(e) => panic!(
                "run systemd-analyze: {e} (the systemd package; scripts/install-deps.sh --test \
                 installs it)"
            ),
        };
        let stderr = text(&out.stderr);
        let complaints: Vec<&str> = stderr.lines().filter(|l| l.contains(unit)).collect();
        assert!(
            out.status.success() && complaints.is_empty(),
            "systemd-analyze verify {unit}: {}\n{stderr}",
            out.status
        );
    }
    let relay = std::fs::read_to_string(repo_file("deploy/peercam-relay.service"))
        .expect("read the relay unit");
    for line in [
        "ExecStart=/usr/bin/peercam relay --config /etc/peercam/relay.toml",
        "DynamicUser=yes",
        "StateDirectory=peercam-relay",
    ] {
        assert!(
            relay.lines().any(|l| l == line),
            "no `{line}` in the relay unit"
        );
    }
    let manifest = std::fs::read_to_string(repo_file("Cargo.toml")).expect("read Cargo.toml");
    assert!(
        manifest.contains("unit-name = \"peercam-relay\", enable = false, start = false"),
        "Cargo.toml's [package.metadata.deb] systemd-units must ship peercam-relay disabled"
    );
}

/// A listen address that cannot be bound: one line on stderr (not the log line and then the
/// same again), naming the cause and what to do for it.
#[test]
fn a_listen_address_that_cannot_be_bound_says_why_once() {
    let config = repo_file("tests/fixtures/config/loopback.toml");
    let config = config.to_str().expect("utf-8 path");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let port = taken.local_addr().expect("local address").port();
    let cases = [
        (
            format!("127.0.0.1:{port}"),
            format!("another program already listens on port {port}"),
        ),
        (
            "198.51.100.99:7000".to_owned(),
            "198.51.100.99 is not an address of this machine".to_owned(),
        ),
    ];
    for (listen, hint) in cases {
        let out = peercam(&["--config", config, "--listen", &listen]);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let stderr = text(&out.stderr);
        assert_eq!(stderr.matches("cannot listen on").count(), 1, "{stderr}");
        let line = stderr
            .lines()
            .find(|l| l.contains("cannot listen on"))
            .expect("the error line");
        assert!(
            line.starts_with(&format!("peercam: cannot listen on {listen}: ")),
            "{line}"
        );
        assert!(line.contains(&hint), "{line}");
        assert!(line.ends_with("[server] listen or --listen"), "{line}");
    }
}

/// Port 80 as a user without privileges (root runs it as `nobody`): the privileged-port
/// hint. Skipped where unprivileged users may bind low ports
/// (`net.ipv4.ip_unprivileged_port_start`).
#[test]
fn a_privileged_port_gets_the_privileged_port_hint() {
    let start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|v| v.trim().parse::<u16>().ok())
        .unwrap_or(1024);
    if start <= 80 {
        eprintln!("skipped: unprivileged users may bind port 80 here");
        return;
    }
    let config = repo_file("tests/fixtures/config/loopback.toml");
    let config = config.to_str().expect("utf-8 path");
    let peercam_bin = env!("CARGO_BIN_EXE_peercam");
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    let mut command = if root {
        let mut c = std::process::Command::new("setpriv");
        c.args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "--inh-caps=-all",
            peercam_bin,
        ]);
        c
    } else {
        std::process::Command::new(peercam_bin)
    };
    let out = command
        .args(["--config", config, "--listen", "127.0.0.1:80"])
        .env_remove("JOURNAL_STREAM")
        .env_remove("RUST_LOG")
        .output()
        .expect("run peercam");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.matches("cannot listen on").count(), 1, "{stderr}");
    assert!(
        stderr.contains(
            "peercam: cannot listen on 127.0.0.1:80: Permission denied (os error 13): ports \
             below 1024 need privileges peercam does not run with"
        ),
        "{stderr}"
    );
}

/// `peercam urls` prints where to open the page: the configured address when it is one
/// address, and never 0.0.0.0 when it listens on every one.
#[test]
fn urls_prints_the_pages_addresses() {
    let config = repo_file("tests/fixtures/config/loopback.toml");
    let config = config.to_str().expect("utf-8 path");
    let out = peercam(&["--config", config, "--listen", "127.0.0.1:7000", "urls"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "http://127.0.0.1:7000/\n");
    let out = peercam(&["--config", config, "--listen", "0.0.0.0:7000", "urls"]);
    assert!(out.status.success(), "{out:?}");
    let urls = text(&out.stdout);
    assert!(!urls.is_empty() && !urls.contains("0.0.0.0"), "{urls}");
    assert!(
        urls.lines()
            .all(|u| u.starts_with("http://") && u.ends_with(":7000/")),
        "{urls}"
    );
    let broken = peercam(&["--config", "/nonexistent/peercam.toml", "urls"]);
    assert_eq!(broken.status.code(), Some(2), "{broken:?}");
}
