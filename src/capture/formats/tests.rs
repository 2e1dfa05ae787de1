//! Tests for `formats.rs`: the fixture listings in tests/fixtures/cameras and the choices
//! made for them.

use super::*;

fn fixture(name: &str, device: &str, card: &str) -> Capabilities {
    let path = format!(
        "{}/tests/fixtures/cameras/{name}.txt",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    parse_list_formats_ext(device, card, &text)
}

fn c270() -> Capabilities {
    fixture("logitech-c270", "/dev/video0", "HD Webcam C270")
}
fn c920() -> Capabilities {
    fixture("logitech-c920", "/dev/video0", "HD Pro Webcam C920")
}
fn pi() -> Capabilities {
    fixture(
        "raspberrypi-bcm2835-mmal",
        "/dev/video0",
        "mmal service 16.1",
    )
}
fn vivid() -> Capabilities {
    fixture("vivid", "/dev/video2", "vivid")
}

fn req(width: u32, height: u32, fps: u32) -> Request {
    Request {
        width,
        height,
        fps,
        h264_passthrough_ok: false,
        forced_format: None,
        keyframe_interval_s: 2,
    }
}

fn passthrough(mut r: Request) -> Request {
    r.h264_passthrough_ok = true;
    r
}

fn forced(mut r: Request, code: &str) -> Request {
    r.forced_format = Some(FourCc::parse(code));
    r
}

/// Asserts the choice and that its reason names what was asked and what was picked.
#[track_caller]
fn assert_chosen(caps: &Capabilities, r: &Request, want: (&str, u32, u32, f32), because: &str) {
    let c = choose_mode(caps, r).unwrap_or_else(|e| panic!("{}: {e}", caps.card));
    assert_eq!(
        (c.fourcc.code(), c.width, c.height, c.fps),
        want,
        "{}: {}",
        caps.card,
        c.reason
    );
    let asked = format!("asked {}x{}@{} fps", r.width, r.height, r.fps);
    let picked = format!(
        "picked {} {}x{}@{} fps",
        want.0,
        want.1,
        want.2,
        fmt_fps(want.3)
    );
    assert!(c.reason.starts_with(&asked), "{}", c.reason);
    assert!(c.reason.contains(&picked), "{}", c.reason);
    assert!(c.reason.contains(because), "{} lacks {because:?}", c.reason);
}

#[test]
fn fourcc_parses_known_codes_and_keeps_others() {
    assert_eq!(FourCc::parse("YUYV"), FourCc::Yuyv);
    assert_eq!(FourCc::parse("nv12"), FourCc::Nv12);
    assert_eq!(FourCc::parse("YU12"), FourCc::Yu12);
    assert_eq!(FourCc::parse("MJPG"), FourCc::Mjpg);
    assert_eq!(FourCc::parse("H264"), FourCc::H264);
    assert_eq!(FourCc::parse("pRAA"), FourCc::Other("pRAA".into()));
    assert_eq!(FourCc::Other("UYVY".into()).to_string(), "UYVY");
    assert_eq!(FourCc::Mjpg.to_string(), "MJPG");
}

#[test]
fn parser_reads_discrete_sizes_and_rates() {
    let caps = c270();
    assert_eq!(
        (caps.device.as_str(), caps.card.as_str()),
        ("/dev/video0", "HD Webcam C270")
    );
    assert_eq!(caps.modes.len(), 19);
    assert_eq!(
        caps.modes[0],
        CameraMode {
            fourcc: FourCc::Yuyv,
            width: 640,
            height: 480,
            fps: vec![30.0, 25.0, 20.0, 15.0, 10.0, 7.5, 5.0],
        }
    );
    let yuyv_720 = caps
        .modes
        .iter()
        .find(|m| (m.width, m.height) == (1280, 720));
    assert_eq!(yuyv_720.map(|m| m.fps.clone()), Some(vec![7.5, 5.0]));
    // vivid lists its intervals slowest first; the parser sorts highest first.
    let v = vivid();
    assert_eq!(v.modes.len(), 25);
    assert_eq!(v.modes[0].fps.first(), Some(&60.0));
    assert_eq!(v.modes[3].fps, vec![12.5, 10.0, 5.0, 4.0, 2.0, 1.0]);
    assert_eq!(v.modes[20].fourcc, FourCc::Other("RGB3".into()));
}

#[test]
fn parser_expands_stepwise_sizes_and_rates() {
    let caps = pi();
    let yu12: Vec<(u32, u32)> = caps
        .modes
        .iter()
        .filter(|m| m.fourcc == FourCc::Yu12)
        .map(|m| (m.width, m.height))
        .collect();
    assert!(
        yu12.contains(&(640, 480)) && yu12.contains(&(1920, 1080)),
        "{yu12:?}"
    );
    assert!(
        yu12.contains(&(2592, 1944)) && !yu12.contains(&(3840, 2160)),
        "{yu12:?}"
    );
    assert_eq!(
        caps.modes[0].fps,
        vec![90.0, 60.0, 50.0, 30.0, 25.0, 24.0, 20.0, 15.0, 10.0, 5.0, 1.0]
    );
    assert_eq!(
        stepwise_rates(7.5, 30.0),
        vec![30.0, 25.0, 24.0, 20.0, 15.0, 10.0, 7.5]
    );
}

#[test]
fn parser_reads_the_older_v4l2_ctl_layout_and_skips_noise() {
    let text = "ioctl: VIDIOC_ENUM_FMT\n\tIndex       : 0\n\tType        : Video Capture\n\
                \tPixel Format: 'YUYV'\n\tName        : YUYV 4:2:2\n\
                \t\tSize: Discrete 640x480\n\t\t\tInterval: Discrete 0.033s (30.000 fps)\n\
                \t\tSize: Discrete garbage\n\t\t\tInterval: Discrete 0.067s (15.000 fps)\n";
    let caps = parse_list_formats_ext("/dev/video9", "old", text);
    // The interval after the unreadable size line belongs to no mode.
    assert_eq!(caps.modes.len(), 1);
    assert_eq!(caps.modes[0].fps, vec![30.0]);
}

#[test]
fn c270_prefers_yuyv_but_mjpeg_where_yuyv_is_too_slow() {
    let caps = c270();
    let cheapest = "YUYV is the cheapest format at this size";
    assert_chosen(
        &caps,
        &req(640, 480, 30),
        ("YUYV", 640, 480, 30.0),
        cheapest,
    );
    assert_chosen(
        &caps,
        &req(320, 240, 15),
        ("YUYV", 320, 240, 15.0),
        "exact size",
    );
    assert_chosen(
        &caps,
        &req(1280, 720, 30),
        ("MJPG", 1280, 720, 30.0),
        "MJPG because YUYV reaches only 7.5 fps",
    );
    // Passthrough allowed changes nothing: the C270 has no H.264.
    let r = passthrough(req(1280, 720, 30));
    assert_chosen(&caps, &r, ("MJPG", 1280, 720, 30.0), "exact size");
    // 1280x960 is the closest area to 1920x1080; only YUYV has it, at 7.5 fps.
    assert_chosen(
        &caps,
        &req(1920, 1080, 30),
        ("YUYV", 1280, 960, 7.5),
        "closest size offered to 1920x1080",
    );
    let r = forced(req(640, 480, 30), "MJPG");
    assert_chosen(&caps, &r, ("MJPG", 640, 480, 30.0), "format MJPG forced");
}

#[test]
fn c270_without_a_forced_format_names_device_and_offers() {
    let e = choose_mode(&c270(), &forced(req(640, 480, 30), "NV12")).expect_err("no NV12");
    let text = e.to_string();
    assert!(
        text.starts_with("/dev/video0 (HD Webcam C270) has no NV12 mode; it offers YUYV 640x480@30,25,20,15,10,7.5,5; YUYV 160x120@"),
        "{text}"
    );
    assert!(
        text.contains("MJPG 1280x720@30,25,20,15,10,7.5,5"),
        "{text}"
    );
    let e = choose_mode(&c270(), &forced(req(640, 480, 30), "H264")).expect_err("no H264");
    assert!(e.to_string().contains("has no H264 mode"), "{e}");
}

#[test]
fn c920_uses_h264_only_when_passthrough_is_allowed() {
    let caps = c920();
    let pass = "camera H.264 passed through";
    for (w, h, fps) in [
        (640, 480, 30),
        (1280, 720, 30),
        (1920, 1080, 30),
        (320, 240, 15),
    ] {
        let want = ("H264", w, h, fps as f32);
        assert_chosen(&caps, &passthrough(req(w, h, fps)), want, pass);
    }
    assert_chosen(
        &caps,
        &req(640, 480, 30),
        ("YUYV", 640, 480, 30.0),
        "cheapest",
    );
    assert_chosen(
        &caps,
        &req(320, 240, 15),
        ("YUYV", 320, 240, 15.0),
        "cheapest",
    );
    assert_chosen(
        &caps,
        &req(1280, 720, 30),
        ("MJPG", 1280, 720, 30.0),
        "YUYV reaches only 10 fps",
    );
    assert_chosen(
        &caps,
        &req(1920, 1080, 30),
        ("MJPG", 1920, 1080, 30.0),
        "YUYV reaches only 5 fps",
    );
    let r = forced(req(1920, 1080, 30), "YUYV");
    assert_chosen(
        &caps,
        &r,
        ("YUYV", 1920, 1080, 5.0),
        "5 fps is the most this size offers",
    );
    let e = choose_mode(&caps, &forced(req(1920, 1080, 30), "H264")).expect_err("no passthrough");
    assert!(e.to_string().contains("first configured codec"), "{e}");
}

#[test]
fn raspberry_pi_prefers_planar_yuv_at_stepwise_sizes() {
    let caps = pi();
    let cheapest = "YU12 is the cheapest format at this size";
    assert_chosen(
        &caps,
        &req(640, 480, 30),
        ("YU12", 640, 480, 30.0),
        cheapest,
    );
    assert_chosen(
        &caps,
        &req(1280, 720, 30),
        ("YU12", 1280, 720, 30.0),
        cheapest,
    );
    assert_chosen(
        &caps,
        &req(1920, 1080, 30),
        ("YU12", 1920, 1080, 30.0),
        cheapest,
    );
    assert_chosen(
        &caps,
        &req(320, 240, 15),
        ("YU12", 320, 240, 15.0),
        cheapest,
    );
    let r = passthrough(req(1920, 1080, 30));
    assert_chosen(&caps, &r, ("H264", 1920, 1080, 30.0), "passed through");
    let r = forced(req(1280, 720, 30), "NV12");
    assert_chosen(&caps, &r, ("NV12", 1280, 720, 30.0), "format NV12 forced");
}

#[test]
fn vivid_gives_the_fastest_rate_its_sizes_allow() {
    let caps = vivid();
    let slow = "is the most this size offers";
    let r = req(640, 480, 30);
    assert_chosen(
        &caps,
        &r,
        ("YU12", 640, 480, 25.0),
        "25 fps is the most this size offers",
    );
    assert_chosen(&caps, &req(1280, 720, 30), ("YU12", 1280, 720, 12.5), slow);
    assert_chosen(&caps, &req(1920, 1080, 30), ("YU12", 1920, 1080, 5.0), slow);
    // 320x180 is closer in area to 320x240 than 640x360 is.
    assert_chosen(
        &caps,
        &req(320, 240, 15),
        ("YU12", 320, 180, 15.0),
        "closest size",
    );
    let r = forced(req(640, 480, 30), "YUYV");
    assert_chosen(&caps, &r, ("YUYV", 640, 480, 25.0), "format YUYV forced");
    let r = passthrough(req(640, 480, 30));
    assert_chosen(&caps, &r, ("YU12", 640, 480, 25.0), "cheapest");
    let e = choose_mode(&caps, &forced(req(640, 480, 30), "MJPG")).expect_err("no MJPG");
    let text = e.to_string();
    assert!(
        text.starts_with("/dev/video2 (vivid) has no MJPG mode; it offers YUYV 320x180@60,50,40"),
        "{text}"
    );
    assert!(text.ends_with("... (1 more)"), "{text}");
    let e = choose_mode(&caps, &forced(req(640, 480, 30), "UYVY")).expect_err("unsupported");
    assert!(
        e.to_string()
            .contains("offers UYVY, which peercam cannot capture"),
        "{e}"
    );
}

#[test]
fn a_camera_with_only_unsupported_formats_names_them() {
    let text = "\t[0]: 'pRAA' (10-bit Bayer RGRG/GBGB Packed)\n\
                \t\tSize: Discrete 1920x1080\n\t\t\tInterval: Discrete 0.033s (30.000 fps)\n\
                \t[1]: 'H264' (H.264, compressed)\n\t\tSize: Discrete 1920x1080\n";
    let caps = parse_list_formats_ext("/dev/video0", "unicam", text);
    let e = choose_mode(&caps, &req(1920, 1080, 30)).expect_err("nothing usable");
    assert_eq!(
        e.to_string(),
        "/dev/video0 (unicam) has no mode peercam can capture (YUYV, NV12, YU12 or MJPG); \
         it offers pRAA 1920x1080@30; H264 1920x1080"
    );
    // With passthrough allowed, the H.264 mode is usable; it lists no rates.
    let c = choose_mode(&caps, &passthrough(req(1920, 1080, 30))).expect("H264 passthrough");
    assert_eq!((c.fourcc, c.fps), (FourCc::H264, 30.0));
    assert!(c.reason.contains("lists no frame rates"), "{}", c.reason);
    let empty = parse_list_formats_ext("/dev/video1", "meta", "");
    let e = choose_mode(&empty, &req(640, 480, 30)).expect_err("no modes");
    assert!(e.to_string().ends_with("it offers no capture modes"), "{e}");
}

#[test]
fn frame_rate_is_the_highest_not_above_the_request_else_the_lowest_above() {
    assert_eq!(pick_fps(&[60.0, 30.0, 15.0], 30), 30.0);
    assert_eq!(pick_fps(&[60.0, 29.97, 15.0], 30), 29.97);
    assert_eq!(pick_fps(&[60.0, 25.0, 15.0], 30), 25.0);
    assert_eq!(pick_fps(&[90.0, 60.0, 50.0], 30), 50.0);
    assert_eq!(pick_fps(&[], 24), 24.0);
}
