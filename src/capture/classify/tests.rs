//! Tests for `classify.rs`: the node lists of real boards in tests/fixtures/v4l2-nodes (see
//! its README.md for where each comes from) and a few made-up nodes for the rules those
//! lists do not reach.

use super::fixture::{fixture, parse_fixture};
use super::*;

fn node<'a>(nodes: &'a [NodeInfo], path: &str) -> &'a NodeInfo {
    nodes
        .iter()
        .find(|n| n.path == path)
        .unwrap_or_else(|| panic!("{path} is not in the fixture"))
}

/// Asserts the kind of every listed path.
fn assert_kinds(nodes: &[NodeInfo], expected: &[(&str, NodeKind)]) {
    for (path, kind) in expected {
        assert_eq!(classify(node(nodes, path)), *kind, "{path}");
    }
}

fn not(reason: NotCamera) -> NodeKind {
    NodeKind::NotCamera(reason)
}

fn paths(range: std::ops::RangeInclusive<u32>) -> Vec<String> {
    range.map(|n| format!("/dev/video{n}")).collect()
}

/// The Raspberry Pi 4's codec, ISP and HEVC nodes, the same with or without a webcam.
fn assert_pi4_platform_nodes(nodes: &[NodeInfo]) {
    use NotCamera::*;
    assert_kinds(
        nodes,
        &[
            ("/dev/video10", not(Decoder)),
            ("/dev/video11", not(Encoder)),
            ("/dev/video12", not(Converter)),
            ("/dev/video18", not(Converter)),
            ("/dev/video31", not(JpegEncoder)),
            ("/dev/video19", not(Decoder)),
        ],
    );
    for path in [13, 14, 15, 16, 20, 21, 22, 23].map(|n| format!("/dev/video{n}")) {
        assert_eq!(classify(node(nodes, &path)), not(Isp), "{path}");
    }
}

/// The Raspberry Pi 5's HEVC decoder and PiSP back end nodes.
fn assert_pi5_platform_nodes(nodes: &[NodeInfo]) {
    assert_eq!(
        classify(node(nodes, "/dev/video19")),
        not(NotCamera::Decoder)
    );
    for path in paths(20..=37) {
        assert_eq!(classify(node(nodes, &path)), not(NotCamera::Isp), "{path}");
    }
}

#[test]
fn fixtures_parse_with_every_node() {
    let counts = [
        ("pi4-camera-module", 16),
        ("pi4-usb-webcam", 16),
        ("pi5-camera-modules", 35),
        ("pi5-usb-webcam", 21),
        ("x86-uvc-webcam", 2),
    ];
    for (name, count) in counts {
        assert_eq!(fixture(name).len(), count, "{name}");
    }
    assert!(parse_fixture("driver x\n").is_err(), "a key before `node`");
    assert!(parse_fixture("node /dev/video0\ndriver x\ndevice_caps 0xzz\n").is_err());
    assert!(parse_fixture("node /dev/video0\ndriver x\ncolour red\n").is_err());
}

#[test]
fn pi4_with_the_camera_module_has_no_v4l2_camera() {
    let nodes = fixture("pi4-camera-module");
    assert_eq!(pick_auto(&nodes, false), None);
    assert_eq!(pick_auto(&nodes, true), None);
    assert!(nodes.iter().all(|n| classify(n) != NodeKind::Camera));
    assert_kinds(
        &nodes,
        &[
            ("/dev/video0", not(NotCamera::CameraModuleRaw)),
            ("/dev/video1", not(NotCamera::CameraModuleOther)),
        ],
    );
    assert_pi4_platform_nodes(&nodes);
}

#[test]
fn pi4_picks_the_usb_webcam() {
    let nodes = fixture("pi4-usb-webcam");
    for h264_ok in [false, true] {
        let picked = pick_auto(&nodes, h264_ok).expect("the webcam");
        assert_eq!(picked.path, "/dev/video0");
        assert_eq!(picked.driver, "uvcvideo");
    }
    assert_eq!(classify(node(&nodes, "/dev/video0")), NodeKind::Camera);
    assert_eq!(
        classify(node(&nodes, "/dev/video1")),
        not(NotCamera::Metadata)
    );
    assert_pi4_platform_nodes(&nodes);
}

#[test]
fn pi5_with_camera_modules_has_no_v4l2_camera() {
    let nodes = fixture("pi5-camera-modules");
    assert_eq!(pick_auto(&nodes, false), None);
    assert_eq!(pick_auto(&nodes, true), None);
    assert!(nodes.iter().all(|n| classify(n) != NodeKind::Camera));
    // Each receiver: csi2_ch0, embedded, csi2_ch2, csi2_ch3, fe_image0, fe_image1, fe_stats,
    // fe_config.
    for base in [0, 8] {
        for (offset, image) in [true, false, true, true, true, true, false, false]
            .into_iter()
            .enumerate()
        {
            let path = format!("/dev/video{}", base + offset);
            let expected = if image {
                NotCamera::CameraModuleRaw
            } else {
                NotCamera::CameraModuleOther
            };
            assert_eq!(classify(node(&nodes, &path)), not(expected), "{path}");
        }
    }
    assert_pi5_platform_nodes(&nodes);
}

#[test]
fn pi5_picks_the_usb_webcam() {
    let nodes = fixture("pi5-usb-webcam");
    let picked = pick_auto(&nodes, false).expect("the webcam");
    assert_eq!(picked.path, "/dev/video0");
    assert_eq!(picked.card, "3D USB Camera: 3D USB Camera");
    assert_eq!(
        classify(node(&nodes, "/dev/video1")),
        not(NotCamera::Metadata)
    );
    assert_pi5_platform_nodes(&nodes);
}

#[test]
fn x86_picks_the_webcam_and_not_its_metadata_node() {
    let nodes = fixture("x86-uvc-webcam");
    assert_eq!(
        pick_auto(&nodes, false).map(|n| n.path.as_str()),
        Some("/dev/video0")
    );
    assert_eq!(
        classify(node(&nodes, "/dev/video1")),
        not(NotCamera::Metadata)
    );
    // The metadata node alone is no camera.
    assert_eq!(pick_auto(&nodes[1..], true), None);
}

/// Without device_caps, "the first node that captures a convertible format" took an ISP or
/// Camera Module node on every Raspberry Pi fixture (the bug this module fixes).
#[test]
fn the_old_rule_picked_non_cameras_on_a_pi() {
    let old_rule = |nodes: &[NodeInfo]| -> Option<String> {
        nodes
            .iter()
            .find(|n| n.formats.iter().any(|f| FourCc::parse(f).is_convertible()))
            .map(|n| n.driver.clone())
    };
    assert_eq!(
        old_rule(&fixture("pi4-camera-module")).as_deref(),
        Some("unicam")
    );
    let mut pi5 = fixture("pi5-usb-webcam");
    pi5.retain(|n| n.driver != "uvcvideo");
    assert_eq!(old_rule(&pi5).as_deref(), Some("pispbe"));
    assert_eq!(pick_auto(&pi5, true), None);
}

#[test]
fn reasons_read_as_the_report_prints_them() {
    assert_eq!(
        NotCamera::Encoder.to_string(),
        "a hardware encoder (memory-to-memory), not a camera"
    );
    assert_eq!(
        NotCamera::CameraModuleRaw.to_string(),
        "the Camera Module's raw sensor node: use [video] source = \"rpicam\""
    );
    for reason in [
        NotCamera::Decoder,
        NotCamera::JpegEncoder,
        NotCamera::Converter,
        NotCamera::MemoryToMemory,
        NotCamera::CaptureAndOutput,
        NotCamera::Isp,
        NotCamera::RawBayer,
        NotCamera::Metadata,
        NotCamera::Output,
    ] {
        assert!(reason.to_string().ends_with("not a camera"), "{reason}");
    }
}

fn made_up(driver: &str, card: &str, device_caps: u32, formats: &[&str]) -> NodeInfo {
    NodeInfo {
        path: "/dev/video0".into(),
        driver: driver.into(),
        card: card.into(),
        bus_info: "platform:made-up".into(),
        device_caps,
        formats: formats.iter().map(|f| f.to_string()).collect(),
    }
}

const CAPTURE: u32 = cap::VIDEO_CAPTURE | cap::STREAMING;

#[test]
fn other_capture_devices_stay_cameras() {
    // vivid (the VM test's camera) and the legacy Pi camera driver (bcm2835-v4l2, whose card
    // is in tests/fixtures/cameras).
    let vivid = made_up("vivid", "vivid", 0x0520_0001, &["YUYV", "YU12", "NV12"]);
    let mmal = made_up(
        "bm2835 mmal",
        "mmal service 16.1",
        0x0520_0005,
        &["YU12", "YUYV", "H264", "MJPG"],
    );
    for info in [&vivid, &mmal] {
        assert_eq!(classify(info), NodeKind::Camera, "{}", info.driver);
    }
    // An infrared camera (GREY only) is a camera, but not one peercam can capture.
    let ir = made_up("uvcvideo", "Integrated IR Camera", CAPTURE, &["GREY"]);
    assert_eq!(classify(&ir), NodeKind::Camera);
    assert_eq!(pick_auto(std::slice::from_ref(&ir), true), None);
    // A multi-planar capture node is a camera too.
    let mplane = made_up("rk_hdmirx", "rk_hdmirx", 0x0420_1000, &["NV12"]);
    assert_eq!(classify(&mplane), NodeKind::Camera);
}

#[test]
fn an_h264_only_camera_is_picked_only_for_passthrough() {
    let h264 = [made_up("uvcvideo", "H264 USB Camera", CAPTURE, &["H264"])];
    assert_eq!(pick_auto(&h264, false), None);
    assert!(pick_auto(&h264, true).is_some());
}

#[test]
fn generic_rules_without_a_known_driver() {
    let cases = [
        // Bayer-only capture node of some other SoC's receiver.
        (
            made_up("some-csi", "csi", CAPTURE, &["pRAA", "RG10", "BA81"]),
            not(NotCamera::RawBayer),
        ),
        // Bayer and YUYV: a camera.
        (
            made_up("some-csi", "csi", CAPTURE, &["BA81", "YUYV"]),
            NodeKind::Camera,
        ),
        // v4l2loopback with exclusive_caps: output only until something writes to it.
        (
            made_up("v4l2 loopback", "Dummy video device", 0x0520_0002, &[]),
            not(NotCamera::Output),
        ),
        // v4l2loopback without exclusive_caps: capture and output on one node.
        (
            made_up(
                "v4l2 loopback",
                "Dummy video device",
                0x0520_0003,
                &["YUYV"],
            ),
            not(NotCamera::CaptureAndOutput),
        ),
        // An unknown memory-to-memory device.
        (
            made_up("vim2m", "vim2m", 0x8420_8000, &["RGB3"]),
            not(NotCamera::MemoryToMemory),
        ),
        (
            made_up("hantro-vpu", "rockchip,rk3399-vpu-dec", 0x0420_4000, &[]),
            not(NotCamera::Decoder),
        ),
        // Metadata capture only (an ISP's statistics elsewhere, a UVC metadata node).
        (
            made_up("c3-isp", "AML C3 ISP", 0x04a0_0000, &[]),
            not(NotCamera::Metadata),
        ),
        (
            made_up("radio", "radio", cap::STREAMING, &[]),
            not(NotCamera::NoVideoCapture),
        ),
    ];
    for (info, kind) in cases {
        assert_eq!(classify(&info), kind, "{info:?}");
    }
}

#[test]
fn device_caps_are_used_when_the_driver_sets_them() {
    // A UVC metadata node: the device can capture video, the node cannot.
    assert_eq!(
        cap::node_caps(0x84a0_0001, 0x04a0_0000),
        0x04a0_0000,
        "device_caps"
    );
    // A driver from before V4L2_CAP_DEVICE_CAPS: only the device's capabilities.
    assert_eq!(cap::node_caps(0x0500_0001, 0), 0x0500_0001);
}

#[test]
fn raw_bayer_codes_are_case_sensitive() {
    assert!(is_raw_bayer("pgAA") && is_raw_bayer("pGAA") && is_raw_bayer("BA81"));
    assert!(!is_raw_bayer("YUYV") && !is_raw_bayer("GREY") && !is_raw_bayer("pgaa"));
}
