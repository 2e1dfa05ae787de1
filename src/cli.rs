//! Command line: `peercam [--config PATH] [--listen ADDR:PORT]` runs the daemon;
//! `peercam check-config [PATH]` only checks a config file; `peercam doctor [--json]
//! [--no-bench]` checks this board (devices, permissions, ports, config) and benchmarks the
//! encoders; `peercam urls` prints where to open the page from the LAN; `peercam relay` runs
//! a signaling relay.
//!
//! Exit codes: 0 success, 1 the daemon failed, 2 bad command line or configuration (the
//! daemon never starts half-configured).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, ConfigError, ConfigOrigin, Loaded};
use crate::daemon::ConfigSource;

/// Exit code for a configuration or usage error (clap uses 2 for usage errors too).
const EXIT_CONFIG: u8 = 2;
/// Exit code when the daemon stopped with an error.
const EXIT_DAEMON: u8 = 1;

/// Headless camera daemon: streams a webcam and microphone (or a test pattern and tone) to
/// browsers over WebRTC. Open http://<host>:7000/ and press Dial.
#[derive(Debug, Parser)]
#[command(name = "peercam", version, about)]
pub struct Cli {
    /// Config file [default: /etc/peercam/peercam.toml if it exists, else built-in defaults].
    #[arg(long, value_name = "PATH", global = true)]
    pub config: Option<PathBuf>,
    /// Listen on this address instead of [server] listen (for `relay`: [relay_server]
    /// listen), e.g. 127.0.0.1:8080.
    #[arg(long, value_name = "ADDR:PORT", global = true, value_parser = listen_address)]
    pub listen: Option<SocketAddr>,
    /// Print every camera (V4L2) and microphone (ALSA) found, with formats, sizes and frame
    /// rates, and exit.
    #[arg(long)]
    pub list_devices: bool,
    /// What to do instead of running the daemon.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a config file and exit: prints "PATH: ok" (exit 0), or the file, line, column,
    /// key and what was expected (exit 2).
    CheckConfig {
        /// File to check [default: --config, else /etc/peercam/peercam.toml].
        path: Option<PathBuf>,
    },
    /// Check this board: cameras, microphones, permissions, ports and the config, each with
    /// PASS/WARN/FAIL and a fix, then a short encode benchmark (at most 20 s) recommending a
    /// [video] size and rate. Exit 0 when the daemon would run, 1 otherwise.
    Doctor {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Skip the encode benchmark (a quick check).
        #[arg(long)]
        no_bench: bool,
        /// The benchmark's time budget in seconds.
        #[arg(long, value_name = "SECONDS", default_value_t = 20,
              value_parser = clap::value_parser!(u64).range(1..=20))]
        bench_seconds: u64,
    },
    /// Print the addresses to open the page at from another machine on the network, one per
    /// line (`http://<host>.local:7000/` and each LAN address, from the config's [server]
    /// listen and tls), and exit. The package's install message uses it.
    Urls,
    /// Run a signaling relay on a public host (no media): devices with a [relay] url connect
    /// out to it, browsers log in and dial them by name. Its config is its own file
    /// [--config, default: /etc/peercam/relay.toml].
    Relay {
        /// Check the relay's config file and exit (0 ok, 2 invalid).
        #[arg(long)]
        check: bool,
    },
}

/// Runs what the command line asks for and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    if cli.list_devices {
        print!("{}", crate::devices::report());
        return ExitCode::SUCCESS;
    }
    match cli.command {
        Some(Command::CheckConfig { path }) => {
            check_config(path.as_deref().or(cli.config.as_deref()))
        }
        Some(Command::Doctor {
            json,
            no_bench,
            bench_seconds,
        }) => crate::doctor::run(
            cli.config.as_deref(),
            &crate::doctor::Options {
                json,
                bench: (!no_bench).then(|| std::time::Duration::from_secs(bench_seconds)),
            },
        ),
        Some(Command::Relay { check }) => run_relay(cli.config.as_deref(), cli.listen, check),
        Some(Command::Urls) => print_urls(cli.config.as_deref(), cli.listen),
        None => run_daemon(cli.config.as_deref(), cli.listen),
    }
}

/// `peercam relay`: reads its own file (there are no built-in defaults to fall back to: a
/// relay without devices serves nobody) and runs it.
fn run_relay(config: Option<&Path>, listen: Option<SocketAddr>, check: bool) -> ExitCode {
    let path = config.unwrap_or(Path::new(config::relay::DEFAULT_RELAY_PATH));
    let mut settings = match config::relay::load_relay(path) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("peercam relay: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if check {
        println!("{}: ok", path.display());
        return ExitCode::SUCCESS;
    }
    if let Some(addr) = listen {
        settings.server.listen = addr;
    }
    crate::logging::init(settings.log.level);
    log::info!("configuration: {}", path.display());
    let source = crate::relay::RelaySource {
        path: path.to_path_buf(),
        listen,
    };
    match crate::relay::run(settings, source) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            fatal("peercam relay", &e);
            ExitCode::from(EXIT_DAEMON)
        }
    }
}

/// Says once why the daemon stopped: in the journal under systemd (where stderr lands too),
/// else on stderr as `peercam: <reason>`.
fn fatal(prefix: &str, e: &dyn std::fmt::Display) {
    if crate::logging::to_journal() {
        log::error!("{e}");
    } else {
        eprintln!("{prefix}: {e}");
    }
}

/// `peercam urls`: the page's URLs from the LAN, one per line.
fn print_urls(config: Option<&Path>, listen: Option<SocketAddr>) -> ExitCode {
    let loaded = match resolve(config, listen) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("peercam: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let server = &loaded.settings.server;
    let scheme = match server.tls {
        config::TlsMode::Off => "http",
        _ => "https",
    };
    for url in crate::lan::urls(scheme, server.listen, &crate::lan::LanFacts::read()) {
        println!("{url}");
    }
    ExitCode::SUCCESS
}

/// Loads the settings and applies the `--listen` override.
pub fn resolve(config: Option<&Path>, listen: Option<SocketAddr>) -> Result<Loaded, ConfigError> {
    source(config, listen).load()
}

fn source(config: Option<&Path>, listen: Option<SocketAddr>) -> ConfigSource {
    ConfigSource {
        path: config.map(Path::to_path_buf),
        listen,
    }
}

fn run_daemon(config: Option<&Path>, listen: Option<SocketAddr>) -> ExitCode {
    let loaded = match resolve(config, listen) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("peercam: {e}");
            eprintln!("peercam: not starting; fix the configuration (check it with `peercam check-config PATH`)");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    crate::logging::init(loaded.settings.log.level);
    match &loaded.origin {
        ConfigOrigin::File(path) => log::info!("configuration: {}", path.display()),
        ConfigOrigin::BuiltInDefaults => {
            log::info!(
                "configuration: built-in defaults ({} does not exist)",
                config::DEFAULT_PATH
            )
        }
    }
    if listen.is_some() {
        log::info!(
            "--listen {} overrides [server] listen",
            loaded.settings.server.listen
        );
    }
    match crate::daemon::run(loaded.settings, source(config, listen)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            fatal("peercam", &e);
            ExitCode::from(EXIT_DAEMON)
        }
    }
}

fn check_config(path: Option<&Path>) -> ExitCode {
    match config::load(path) {
        Ok(Loaded {
            origin: ConfigOrigin::File(path),
            ..
        }) => {
            println!("{}: ok", path.display());
            ExitCode::SUCCESS
        }
        Ok(Loaded {
            origin: ConfigOrigin::BuiltInDefaults,
            ..
        }) => {
            println!(
                "{} does not exist: the built-in defaults are in use",
                config::DEFAULT_PATH
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// `--listen`'s value, refused in the words the config file's `[server] listen` gets.
fn listen_address(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        "expected an IP address and port such as \"0.0.0.0:7000\" or \"[::]:7000\" (a host \
         name is not resolved)"
            .to_owned()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_bad_listen_value_is_refused_in_the_config_files_words() {
        use clap::Parser as _;
        let err = Cli::try_parse_from(["peercam", "--listen", "localhost:7000"])
            .expect_err("a host name is refused");
        assert!(
            err.to_string().contains(
                "invalid value 'localhost:7000' for '--listen <ADDR:PORT>': expected an IP \
                 address and port such as \"0.0.0.0:7000\" or \"[::]:7000\""
            ),
            "{err}"
        );
        let ok = Cli::try_parse_from(["peercam", "--listen", "[::]:7000"]).expect("parses");
        assert_eq!(ok.listen, Some("[::]:7000".parse().expect("addr")));
    }

    use super::*;

    #[test]
    fn parses_daemon_and_check_config_forms() {
        let cli = Cli::try_parse_from([
            "peercam",
            "--config",
            "/tmp/p.toml",
            "--listen",
            "127.0.0.1:0",
        ])
        .expect("parse");
        assert_eq!(cli.config.as_deref(), Some(Path::new("/tmp/p.toml")));
        assert_eq!(cli.listen, Some("127.0.0.1:0".parse().expect("addr")));
        assert!(cli.command.is_none());

        let cli = Cli::try_parse_from(["peercam", "check-config", "x.toml"]).expect("parse");
        assert!(
            matches!(cli.command, Some(Command::CheckConfig { path: Some(ref p) }) if p == Path::new("x.toml"))
        );
        let cli = Cli::try_parse_from(["peercam", "check-config"]).expect("parse");
        assert!(matches!(
            cli.command,
            Some(Command::CheckConfig { path: None })
        ));
        assert!(Cli::try_parse_from(["peercam", "--listen", "nowhere"]).is_err());
    }

    #[test]
    fn parses_doctor_with_its_flags_and_caps_the_benchmark_at_20_s() {
        let cli = Cli::try_parse_from([
            "peercam",
            "--config",
            "x.toml",
            "doctor",
            "--json",
            "--no-bench",
        ])
        .expect("parse");
        assert_eq!(cli.config.as_deref(), Some(Path::new("x.toml")));
        assert!(matches!(
            cli.command,
            Some(Command::Doctor {
                json: true,
                no_bench: true,
                bench_seconds: 20
            })
        ));
        let cli =
            Cli::try_parse_from(["peercam", "doctor", "--bench-seconds", "5"]).expect("parse");
        assert!(matches!(
            cli.command,
            Some(Command::Doctor {
                json: false,
                no_bench: false,
                bench_seconds: 5
            })
        ));
        for bad in ["0", "21"] {
            assert!(Cli::try_parse_from(["peercam", "doctor", "--bench-seconds", bad]).is_err());
        }
    }

    #[test]
    fn listen_flag_overrides_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.toml");
        std::fs::write(
            &path,
            "[server]\nlisten = \"0.0.0.0:7000\"\n[video]\nfps = 12\n",
        )
        .expect("write");
        let addr: SocketAddr = "127.0.0.1:8123".parse().expect("addr");
        let loaded = resolve(Some(&path), Some(addr)).expect("resolve");
        assert_eq!(loaded.settings.server.listen, addr);
        assert_eq!(loaded.settings.video.fps, 12);
        let loaded = resolve(Some(&path), None).expect("resolve");
        assert_eq!(
            loaded.settings.server.listen,
            "0.0.0.0:7000".parse::<SocketAddr>().expect("addr")
        );
    }
}
