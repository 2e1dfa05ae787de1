//! Tests of the doctor's judging and rendering on the node lists and rpicam listings of real
//! boards (tests/fixtures/v4l2-nodes, tests/fixtures/rpicam) and on made-up facts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::bench::{Benchmark, Outcome, Row, LADDER};
use super::checks::{self, Status};
use super::facts::{FileFacts, FileMeta, PortFacts, User};
use super::*;
use crate::capture::alsa::AlsaDevice;
use crate::capture::classify::{self, fixture::fixture, NodeInfo, NodeKind};
use crate::capture::formats::{CameraMode, Capabilities, FourCc};
use crate::capture::rpicam::{self, Probe};
use crate::capture::v4l2::Node;
use crate::config::{ConfigOrigin, Loaded, VideoSource};

const PI4: &str = "Raspberry Pi 4 Model B Rev 1.4";
const PI5: &str = "Raspberry Pi 5 Model B Rev 1.0";

/// A fixture's nodes as `v4l2::list_devices` would give them: cameras get a 640x480 30 fps
/// mode in each of their listed formats.
fn nodes(name: &str) -> Vec<Node> {
    fixture(name).into_iter().map(node_of).collect()
}

fn node_of(info: NodeInfo) -> Node {
    match classify::classify(&info) {
        NodeKind::Camera => Node::Camera {
            caps: Ok(Capabilities {
                device: info.path.clone(),
                card: info.card.clone(),
                modes: info
                    .formats
                    .iter()
                    .map(|f| CameraMode {
                        fourcc: FourCc::parse(f),
                        width: 640,
                        height: 480,
                        fps: vec![30.0],
                    })
                    .collect(),
            }),
            info,
        },
        NodeKind::NotCamera(reason) => Node::NotCamera { info, reason },
    }
}

fn listed(name: &str) -> Probe {
    let path = format!(
        "{}/tests/fixtures/rpicam/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    Probe::Listed {
        program: "rpicam-vid",
        cameras: rpicam::parse_list_cameras(&text),
    }
}

/// Facts of a machine with nothing attached, the built-in defaults, free ports, root.
fn facts() -> Facts {
    Facts {
        config: Ok(Loaded {
            settings: Settings::default(),
            origin: ConfigOrigin::BuiltInDefaults,
        }),
        board_model: None,
        cores: 4,
        rpicam: Probe::NotInstalled,
        nodes: Vec::new(),
        microphones: Vec::new(),
        microphone_open: Some(Err("no such device".into())),
        files: Vec::new(),
        groups: facts::parse_groups("root:x:0:\naudio:x:29:\nvideo:x:44:pi\n"),
        user: User {
            uid: 0,
            gids: vec![0],
        },
        service_unit: None,
        ports: PortFacts {
            listen: "0.0.0.0:7000".parse().expect("addr"),
            tcp: Ok(()),
            udp_port: None,
            ice_tcp_port: None,
            udp_range: Some((50000, 50100)),
            udp_free: 101,
            unprivileged_port_start: Some(1024),
        },
        peercam_pids: Vec::new(),
    }
}

fn check<'a>(report: &'a Report, name: &str) -> &'a Check {
    report
        .checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no {name} check in {report:?}"))
}

fn device(path: &str, gid: u32, mode: u32) -> FileFacts {
    FileFacts {
        path: PathBuf::from(path),
        meta: Ok(FileMeta { uid: 0, gid, mode }),
    }
}

#[test]
fn a_pi_4_with_a_camera_module_uses_it_through_rpicam_vid_with_hardware_h264() {
    let mut f = facts();
    f.board_model = Some(PI4.into());
    f.nodes = nodes("pi4-camera-module");
    f.rpicam = listed("pi4-imx219.txt");
    let report = Report::new(&f, None);
    let camera = check(&report, "camera");
    assert_eq!(camera.status, Status::Pass);
    assert!(
        camera.summary.starts_with(
            "video.source = \"auto\" uses the Camera Module (imx219, camera 0) through \
             rpicam-vid: H.264 from the Pi's hardware encoder, passed through; 16 other \
             /dev/video nodes are not cameras (Camera Module receiver, codec, ISP)"
        ),
        "{}",
        camera.summary
    );
    // With AV1 first there is no passthrough: raw frames.
    f.config = Ok(Loaded {
        settings: {
            let mut s = Settings::default();
            s.video.codecs = vec![VideoCodec::Av1, VideoCodec::H264];
            s
        },
        origin: ConfigOrigin::BuiltInDefaults,
    });
    let report = Report::new(&f, None);
    assert!(
        check(&report, "camera")
            .summary
            .contains("through rpicam-vid: raw frames, encoded by peercam;"),
        "{report:?}"
    );
}

#[test]
fn a_pi_5_with_a_camera_module_gets_raw_frames_that_peercam_encodes() {
    let mut f = facts();
    f.board_model = Some(PI5.into());
    f.nodes = nodes("pi5-camera-modules");
    f.rpicam = listed("pi5-imx219.txt");
    let report = Report::new(&f, None);
    let camera = check(&report, "camera");
    assert_eq!(camera.status, Status::Pass);
    assert!(
        camera.summary.contains(
            "uses the Camera Module (imx219, camera 0) through rpicam-vid: raw frames, encoded \
             by peercam (this board has no H.264 encoder); 35 other /dev/video nodes are not \
             cameras"
        ),
        "{}",
        camera.summary
    );
}

#[test]
fn a_pi_with_a_usb_webcam_picks_the_webcam_not_an_isp_node() {
    for (board, name) in [(PI4, "pi4-usb-webcam"), (PI5, "pi5-usb-webcam")] {
        let mut f = facts();
        f.board_model = Some(board.into());
        f.nodes = nodes(name);
        f.rpicam = listed("none.txt");
        let report = Report::new(&f, None);
        let camera = check(&report, "camera");
        assert_eq!(camera.status, Status::Pass, "{name}");
        assert!(
            camera
                .summary
                .starts_with("video.source = \"auto\" uses /dev/video0 (")
                && camera.summary.contains(") through V4L2; "),
            "{name}: {}",
            camera.summary
        );
        assert!(camera.summary.contains("metadata"), "{}", camera.summary);
    }
}

#[test]
fn x86_without_a_camera_streams_the_test_pattern_and_says_how_to_fix_it() {
    let report = Report::new(&facts(), None);
    let camera = check(&report, "camera");
    assert_eq!(camera.status, Status::Warn);
    assert_eq!(
        camera.summary,
        "no camera found: video.source = \"auto\" streams the test pattern"
    );
    assert_eq!(
        camera.fix.as_deref(),
        Some("plug in a camera; `peercam --list-devices` lists what is there")
    );
    let mic = check(&report, "microphone");
    assert_eq!(mic.status, Status::Warn);
    assert!(mic.summary.contains("test tone"), "{}", mic.summary);
    assert!(report.would_run());
    assert_eq!(report.exit_code(), 0);
    let text = report.text();
    assert!(
        text.contains(
            "WARN  camera: no camera found: video.source = \"auto\" streams the test pattern\n      \
             fix: plug in a camera; `peercam --list-devices` lists what is there\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("(encode benchmark skipped: --no-bench)"),
        "{text}"
    );
    assert!(text.ends_with("(exit 0).\n"), "{text}");
}

#[test]
fn an_x86_webcam_and_a_camera_module_without_rpicam_apps() {
    let mut f = facts();
    f.nodes = nodes("x86-uvc-webcam");
    let report = Report::new(&f, None);
    assert!(
        check(&report, "camera")
            .summary
            .starts_with("video.source = \"auto\" uses /dev/video0 (PTZ Pro Camera) through V4L2; 1 other /dev/video node is not a camera (metadata)"),
        "{report:?}"
    );
    let mut f = facts();
    f.board_model = Some(PI4.into());
    f.nodes = nodes("pi4-camera-module");
    let camera = check(&Report::new(&f, None), "camera").clone();
    assert_eq!(camera.status, Status::Warn);
    assert!(
        camera
            .summary
            .contains("a Camera Module is attached, but rpicam-vid is not installed"),
        "{}",
        camera.summary
    );
    assert!(
        camera
            .fix
            .as_deref()
            .is_some_and(|f| f.contains("apt install rpicam-apps")),
        "{camera:?}"
    );
}

#[test]
fn a_configured_device_that_is_missing_or_not_a_camera_is_a_warning() {
    let mut f = facts();
    f.nodes = nodes("pi4-usb-webcam");
    let mut settings = Settings::default();
    for (path, expected) in [
        ("/dev/video7", "/dev/video7 does not exist"),
        (
            "/dev/video11",
            "/dev/video11 is not a camera: a hardware encoder",
        ),
    ] {
        settings.video.source = VideoSource::Device(path.into());
        f.config = Ok(Loaded {
            settings: settings.clone(),
            origin: ConfigOrigin::BuiltInDefaults,
        });
        let report = Report::new(&f, None);
        let camera = check(&report, "camera");
        assert_eq!(camera.status, Status::Warn, "{path}");
        assert!(camera.summary.contains(expected), "{}", camera.summary);
        assert!(report.would_run());
    }
}

#[test]
fn a_broken_config_fails_and_exits_1() {
    let mut f = facts();
    f.config = Err("p.toml:2:7: [video] fps = 100: expected a number from 1 to 60".into());
    let report = Report::new(&f, None);
    let config = check(&report, "config");
    assert_eq!(config.status, Status::Fail);
    assert!(
        config.summary.starts_with("p.toml:2:7: [video] fps = 100"),
        "{config:?}"
    );
    assert!(!report.would_run());
    assert_eq!(report.exit_code(), 1);
    assert!(
        report.text().contains("FAIL  config: p.toml:2:7"),
        "{}",
        report.text()
    );
}

#[test]
fn permissions_follow_the_service_groups_and_the_user() {
    let mut f = facts();
    f.nodes = nodes("x86-uvc-webcam");
    f.microphone_open = Some(Ok(()));
    f.files = vec![
        device("/dev/video0", 44, 0o660),
        device("/dev/snd/controlC0", 29, 0o660),
        device("/dev/snd/pcmC0D0c", 29, 0o660),
    ];
    let ok = super::permissions::permissions(
        &Settings::default(),
        &checks::resolve_video(&Settings::default().video, 0, &f.rpicam, None, &f.nodes),
        &f,
    );
    assert_eq!(ok.status, Status::Pass, "{ok:?}");
    assert_eq!(
        ok.summary,
        "groups video (44), audio (29) exist; the service can open the 3 device node(s) it needs"
    );

    // A camera only root may open; a user not in group audio.
    f.files[0] = device("/dev/video0", 0, 0o600);
    f.user = User {
        uid: 1000,
        gids: vec![1000, 44],
    };
    let report = Report::new(&f, None);
    let p = check(&report, "permissions");
    assert_eq!(p.status, Status::Warn);
    assert!(
        p.summary.contains(
            "/dev/video0 is group root mode 600: the service (groups video, audio) cannot open it"
        ),
        "{}",
        p.summary
    );
    assert!(
        p.summary
            .contains("/dev/snd/controlC0 is group audio mode 660: you (uid 1000) cannot open it"),
        "{}",
        p.summary
    );
    assert!(
        p.fix
            .as_deref()
            .is_some_and(|f| f.contains("`sudo usermod -aG audio $USER`")),
        "{p:?}"
    );

    // The service unit needs peercam-config; a TLS key nobody but root may read fails.
    f.service_unit = Some(PathBuf::from("/lib/systemd/system/peercam.service"));
    let mut settings = Settings::default();
    settings.server.tls = crate::config::TlsMode::Files {
        cert: "/etc/peercam/cert.pem".into(),
        key: "/etc/peercam/key.pem".into(),
    };
    f.config = Ok(Loaded {
        settings,
        origin: ConfigOrigin::BuiltInDefaults,
    });
    f.files.push(device("/etc/peercam/cert.pem", 0, 0o644));
    f.files.push(device("/etc/peercam/key.pem", 0, 0o600));
    let report = Report::new(&f, None);
    let p = check(&report, "permissions");
    assert_eq!(p.status, Status::Fail, "{p:?}");
    assert!(
        p.summary.contains("group peercam-config does not exist"),
        "{}",
        p.summary
    );
    assert!(
        p.summary
            .contains("you cannot read the TLS key /etc/peercam/key.pem"),
        "{}",
        p.summary
    );
    assert_eq!(report.exit_code(), 1);
}

#[test]
fn a_port_in_use_is_a_warning_that_names_a_running_peercam() {
    let mut f = facts();
    f.ports.tcp = Err("Address already in use (os error 98)".into());
    let p = check(&Report::new(&f, None), "ports").clone();
    assert_eq!(p.status, Status::Warn);
    assert!(
        p.summary
            .starts_with("TCP 0.0.0.0:7000 is in use (by another program)"),
        "{p:?}"
    );
    assert!(
        p.fix.as_deref().is_some_and(|f| f.contains("ss -ltnp")),
        "{p:?}"
    );
    f.peercam_pids = vec![4242];
    f.ports.udp_free = 90;
    let report = Report::new(&f, None);
    let p = check(&report, "ports");
    assert_eq!(
        p.summary,
        "TCP 0.0.0.0:7000 is in use (by a running peercam, pid 4242); UDP 50000-50100: 90 of \
         101 free"
    );
    assert!(report.would_run());
    // Below the unprivileged port start the service cannot bind.
    let mut f = facts();
    f.ports.listen = "0.0.0.0:80".parse::<SocketAddr>().expect("addr");
    let p = check(&Report::new(&f, None), "ports").clone();
    assert_eq!(p.status, Status::Warn);
    assert!(p.summary.contains("port 80 is below 1024"), "{p:?}");
}

fn measured(codec: VideoCodec, (width, height): (u32, u32), fps: f64) -> Row {
    Row {
        codec,
        width,
        height,
        outcome: Outcome::Measured {
            frames: 30,
            ms_per_frame: 700.0 / fps,
            cpu_ms_per_frame: 700.0 / fps,
            fps,
        },
    }
}

fn benchmark() -> Benchmark {
    Benchmark {
        cores: 4,
        bitrate_kbps: 2500,
        elapsed: Duration::from_millis(12_300),
        rows: vec![
            measured(VideoCodec::H264, LADDER[0], 30.0),
            measured(VideoCodec::H264, LADDER[1], 30.0),
            measured(VideoCodec::H264, LADDER[2], 12.0),
            measured(VideoCodec::Av1, LADDER[0], 30.0),
            measured(VideoCodec::Av1, LADDER[1], 18.0),
            Row {
                codec: VideoCodec::Av1,
                width: 1920,
                height: 1080,
                outcome: Outcome::NotMeasured("time budget".into()),
            },
        ],
    }
}

#[test]
fn the_encode_check_and_the_recommended_block() {
    let report = Report::new(&facts(), Some(benchmark()));
    let encode = check(&report, "encode");
    assert_eq!(encode.status, Status::Pass, "{encode:?}");
    assert_eq!(
        encode.summary,
        "H.264 sustains 1280x720 at 30 fps, AV1 sustains 640x480 at 30 fps; [video] 640x480 \
         at 30 fps fits"
    );
    let text = report.text();
    assert!(
        text.contains(
            "Recommended for this board:\n[video]\nwidth = 1280\nheight = 720\nfps = 30\ncodecs \
             = [\"h264\", \"av1\"]\n# AV1 sustains 18 fps at 1280x720: AV1 viewers get fewer \
             frames\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("AV1    1920x1080  not measured (time budget)"),
        "{text}"
    );

    // 1080p configured: H.264 does 12 fps there.
    let mut f = facts();
    let mut settings = Settings::default();
    (settings.video.width, settings.video.height) = (1920, 1080);
    f.config = Ok(Loaded {
        settings,
        origin: ConfigOrigin::BuiltInDefaults,
    });
    let report = Report::new(&f, Some(benchmark()));
    let encode = check(&report, "encode");
    assert_eq!(encode.status, Status::Warn);
    assert!(
        encode.summary.ends_with(
            "[video] 1920x1080 at 30 fps is more than this board sustains (H.264 about 12, AV1 \
             about 18 fps)"
        ),
        "{}",
        encode.summary
    );
    assert_eq!(
        encode.fix.as_deref(),
        Some("use the recommended [video] block below")
    );
    assert!(report.would_run());
}

#[test]
fn json_has_the_checks_rows_recommendation_and_verdict() {
    let mut f = facts();
    f.microphones = vec![AlsaDevice {
        name: "hw:CARD=Mic,DEV=0".into(),
        description: "USB Mic".into(),
    }];
    let v = Report::new(&f, Some(benchmark())).json();
    assert_eq!(v["would_run"], true);
    assert_eq!(v["board"]["cores"], 4);
    let checks = v["checks"].as_array().expect("checks");
    let names: Vec<&str> = checks.iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "config",
            "camera",
            "microphone",
            "permissions",
            "ports",
            "encode"
        ]
    );
    assert_eq!(checks[1]["status"], "warn");
    assert!(checks[1]["fix"].is_string());
    assert_eq!(checks[0]["status"], "pass");
    assert!(checks[0]["fix"].is_null());
    let rows = v["benchmark"]["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 6);
    assert_eq!(rows[0]["codec"], "h264");
    assert_eq!(rows[0]["measured"], true);
    assert_eq!(rows[0]["fps"], 30.0);
    assert_eq!(rows[5]["measured"], false);
    assert_eq!(rows[5]["note"], "time budget");
    assert_eq!(v["recommendation"]["width"], 1280);
    assert_eq!(v["recommendation"]["codecs"], json!(["h264", "av1"]));
    assert!(v["recommendation"]["toml"]
        .as_str()
        .is_some_and(|t| t.starts_with("[video]\n")));
    let without = Report::new(&f, None).json();
    assert!(without["benchmark"].is_null() && without["recommendation"].is_null());
}

#[test]
fn proc_status_and_etc_group_parse() {
    let user = facts::parse_status(
        "Name:\tpeercam\nUid:\t1000\t1000\t1000\t1000\nGid:\t1000\t1001\t1000\t1000\nGroups:\t44 29 \n",
    )
    .expect("status");
    assert_eq!(
        user,
        User {
            uid: 1000,
            gids: vec![1001, 44, 29]
        }
    );
    assert_eq!(facts::parse_status("Name:\tx\n"), None);
    assert_eq!(
        facts::parse_groups("video:x:44:pi,peercam\n# comment\nbroken\naudio:x:29:\n"),
        [("video".to_owned(), 44), ("audio".to_owned(), 29)]
    );
}

#[test]
fn source_rpicam_names_what_is_missing_and_a_forced_h264_on_a_pi_5() {
    let with = |source: VideoSource, format: crate::config::VideoFormat, camera: u32| {
        let mut s = Settings::default();
        s.video.source = source;
        s.video.format = format;
        s.rpicam.camera = camera;
        Ok(Loaded {
            settings: s,
            origin: ConfigOrigin::BuiltInDefaults,
        })
    };
    let mut f = facts();
    f.config = with(VideoSource::Rpicam, crate::config::VideoFormat::Auto, 0);
    let report = Report::new(&f, None);
    let camera = check(&report, "camera");
    assert_eq!(camera.status, Status::Warn, "{camera:?}");
    assert!(
        camera
            .summary
            .contains("rpicam-vid is not installed (nor libcamera-vid)"),
        "{}",
        camera.summary
    );
    assert!(
        report.would_run(),
        "a missing camera does not stop the daemon"
    );

    f.rpicam = listed("two-cameras.txt");
    f.config = with(VideoSource::Rpicam, crate::config::VideoFormat::Auto, 3);
    let report = Report::new(&f, None);
    assert!(
        check(&report, "camera")
            .summary
            .contains("does not list camera 3 (it lists 0 ov5647, 1 imx708)"),
        "{}",
        check(&report, "camera").summary
    );

    // [rpicam] camera = 1 is what auto takes too, when listed.
    f.board_model = Some(PI5.into());
    f.config = with(VideoSource::Auto, crate::config::VideoFormat::H264, 1);
    let report = Report::new(&f, None);
    let summary = &check(&report, "camera").summary;
    assert!(
        summary.contains("(imx708, camera 1)")
            && summary.contains("H.264 from rpicam-vid's software encoder"),
        "{summary}"
    );
}
