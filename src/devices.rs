//! `peercam --list-devices`: the Raspberry Pi Camera Modules `rpicam-vid --list-cameras`
//! lists, every V4L2 camera with its formats, sizes and frame rates, the
//! other `/dev/video*` nodes (codecs, ISPs, the Camera Module's raw nodes, metadata nodes) each
//! with why it is not a camera, which node `video.source = "auto"` uses, and every ALSA
//! capture device, as a readable table.

use std::fmt::Write as _;

use crate::capture::alsa::{list_capture_devices, AlsaDevice};
use crate::capture::classify::NotCamera;
use crate::capture::formats::CameraMode;
use crate::capture::rpicam::{self, Probe};
use crate::capture::v4l2::{self, Node};

/// The whole report, as printed.
pub fn report() -> String {
    render(
        &rpicam::probe(rpicam::LIST_TIMEOUT),
        &v4l2::list_devices(),
        &list_capture_devices(),
    )
}

/// Formats the report from already-gathered lists (testable without devices).
pub fn render(camera_modules: &Probe, nodes: &[Node], microphones: &[AlsaDevice]) -> String {
    let mut out = String::new();
    out.push_str("Camera Modules (rpicam-vid)\n");
    match camera_modules {
        Probe::NotInstalled => out.push_str(
            "  not looked for: rpicam-vid is not installed (Raspberry Pi OS has it in \
             rpicam-apps)\n",
        ),
        Probe::Failed { reason, .. } => {
            let _ = writeln!(out, "  not usable: {reason}");
        }
        Probe::Listed { cameras, .. } if cameras.is_empty() => {
            out.push_str("  none: rpicam-vid lists no camera\n")
        }
        Probe::Listed { program, cameras } => {
            for camera in cameras {
                let size = camera
                    .size
                    .map(|(w, h)| format!("  {w}x{h}"))
                    .unwrap_or_default();
                let _ = writeln!(out, "  {}  {}{size}", camera.index, camera.sensor);
                let modes: Vec<String> = camera
                    .modes
                    .iter()
                    .map(|m| format!("{}x{} up to {:.0} fps", m.width, m.height, m.fps))
                    .collect();
                if !modes.is_empty() {
                    let _ = writeln!(out, "     sensor modes: {}", modes.join(", "));
                }
            }
            let first = &cameras[0];
            let _ = writeln!(
                out,
                "  video.source = \"auto\" uses camera {} ({}) through {program} (the first \
                 listed, or [rpicam] camera)",
                first.index, first.sensor
            );
        }
    }
    let camera_module = !camera_modules.cameras().is_empty();
    out.push_str("\nCameras (V4L2)\n");
    if nodes.is_empty() {
        out.push_str("  none found (no /dev/video* nodes): video.source = \"auto\" streams the test pattern\n");
    }
    let mut others: Vec<(String, String, String)> = Vec::new();
    let mut cameras = 0;
    for node in nodes {
        match node {
            Node::Camera { info, caps } => {
                cameras += 1;
                match caps {
                    Ok(caps) => {
                        let _ = writeln!(out, "  {}  {}", info.path, caps.card);
                        let _ =
                            writeln!(out, "    {:<6} {:>11}  frame rates (fps)", "format", "size");
                        for line in mode_lines(&caps.modes) {
                            let _ = writeln!(out, "    {line}");
                        }
                        if caps.modes.is_empty() {
                            out.push_str("    (no capture formats listed)\n");
                        }
                    }
                    Err(e) => {
                        let _ = writeln!(out, "  {}  {}  not usable: {e}", info.path, info.card);
                    }
                }
            }
            Node::Unreadable { path, error } => {
                cameras += 1;
                let _ = writeln!(out, "  {}  not usable: {error}", path.display());
            }
            Node::NotCamera { info, reason } => {
                others.push((info.path.clone(), info.card.clone(), reason.to_string()));
            }
        }
    }
    if !nodes.is_empty() {
        if cameras == 0 {
            out.push_str("  none: no /dev/video* node here is a camera\n");
        }
        out.push_str(&auto_line(nodes, camera_module));
    }
    if !others.is_empty() {
        out.push_str("\nNot cameras (other /dev/video* nodes; \"auto\" skips them)\n");
        let path_width = others.iter().map(|o| o.0.len()).max().unwrap_or(0);
        let card_width = others.iter().map(|o| o.1.len()).max().unwrap_or(0);
        for (path, card, reason) in &others {
            let _ = writeln!(out, "  {path:<path_width$}  {card:<card_width$}  {reason}");
        }
    }
    out.push_str("\nMicrophones (ALSA capture)\n");
    if microphones.is_empty() {
        out.push_str("  none found: audio.source = \"auto\" streams the test tone\n");
    }
    for m in microphones {
        let _ = writeln!(out, "  {:<32} {}", m.name, m.description);
    }
    out
}

/// Which node `video.source = "auto"` uses, or that it finds no V4L2 camera (and, when a
/// Camera Module's receiver is there, how to use the Camera Module instead).
fn auto_line(nodes: &[Node], camera_module: bool) -> String {
    if camera_module {
        return match v4l2::auto_choice(nodes, true) {
            Some((path, _)) => format!(
                "  video.source = \"auto\" uses the Camera Module (above); set source = \"{}\" \
                 for this camera\n",
                path.display()
            ),
            None => "  video.source = \"auto\" uses the Camera Module (above)\n".to_owned(),
        };
    }
    if let Some((path, _)) = v4l2::auto_choice(nodes, false) {
        return format!("  video.source = \"auto\" uses {}\n", path.display());
    }
    if let Some((path, _)) = v4l2::auto_choice(nodes, true) {
        return format!(
            "  video.source = \"auto\" uses {} when \"h264\" is first in [video] codecs (it \
             offers only H.264, passed through); otherwise no V4L2 camera\n",
            path.display()
        );
    }
    let camera_module = nodes.iter().any(|n| {
        matches!(
            n,
            Node::NotCamera {
                reason: NotCamera::CameraModuleRaw,
                ..
            }
        )
    });
    if camera_module {
        "  video.source = \"auto\": no V4L2 camera; a Camera Module is attached: install \
         rpicam-apps (it provides rpicam-vid) and \"auto\" uses it\n"
            .to_owned()
    } else {
        "  video.source = \"auto\": no V4L2 camera found\n".to_owned()
    }
}

fn mode_lines(modes: &[CameraMode]) -> Vec<String> {
    modes
        .iter()
        .map(|m| {
            let rates: Vec<String> = m
                .fps
                .iter()
                .map(|f| {
                    if (f.fract()).abs() < 0.01 {
                        format!("{f:.0}")
                    } else {
                        format!("{f:.1}")
                    }
                })
                .collect();
            format!(
                "{:<6} {:>11}  {}",
                m.fourcc.to_string(),
                format!("{}x{}", m.width, m.height),
                rates.join(", ")
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::capture::classify::{NodeInfo, NotCamera};
    use crate::capture::formats::{Capabilities, FourCc};

    fn info(path: &str, driver: &str, card: &str, device_caps: u32) -> NodeInfo {
        NodeInfo {
            path: path.into(),
            driver: driver.into(),
            card: card.into(),
            bus_info: "usb-0000:00:14.0-1".into(),
            device_caps,
            formats: Vec::new(),
        }
    }

    fn c270() -> Capabilities {
        Capabilities {
            device: "/dev/video0".into(),
            card: "HD Webcam C270".into(),
            modes: vec![
                CameraMode {
                    fourcc: FourCc::Yuyv,
                    width: 640,
                    height: 480,
                    fps: vec![30.0, 15.0],
                },
                CameraMode {
                    fourcc: FourCc::Mjpg,
                    width: 1280,
                    height: 720,
                    fps: vec![30.0, 12.5],
                },
            ],
        }
    }

    #[test]
    fn report_lists_cameras_modes_other_nodes_and_microphones() {
        let text = render(
            &Probe::NotInstalled,
            &[
                Node::Camera {
                    info: info("/dev/video0", "uvcvideo", "HD Webcam C270", 0x0420_0001),
                    caps: Ok(c270()),
                },
                Node::NotCamera {
                    info: info("/dev/video1", "uvcvideo", "HD Webcam C270", 0x04a0_0000),
                    reason: NotCamera::Metadata,
                },
                Node::NotCamera {
                    info: info(
                        "/dev/video11",
                        "bcm2835-codec",
                        "bcm2835-codec-encode",
                        0x0420_4000,
                    ),
                    reason: NotCamera::Encoder,
                },
                Node::Unreadable {
                    path: PathBuf::from("/dev/video2"),
                    error: "camera /dev/video2: permission denied".into(),
                },
            ],
            &[AlsaDevice {
                name: "hw:CARD=U0x46d0x825,DEV=0".into(),
                description: "USB Device 0x46d:0x825, USB Audio".into(),
            }],
        );
        assert!(text.contains("/dev/video0  HD Webcam C270"), "{text}");
        assert!(text.contains("YUYV       640x480  30, 15"), "{text}");
        assert!(text.contains("MJPG      1280x720  30, 12.5"), "{text}");
        assert!(text.contains("/dev/video2  not usable"), "{text}");
        assert!(
            text.contains("video.source = \"auto\" uses /dev/video0"),
            "{text}"
        );
        assert!(text.contains("Not cameras"), "{text}");
        assert!(
            text.contains(
                "/dev/video11  bcm2835-codec-encode  a hardware encoder (memory-to-memory), \
                 not a camera"
            ),
            "{text}"
        );
        assert!(
            text.contains("/dev/video1   HD Webcam C270        a metadata node"),
            "{text}"
        );
        assert!(text.contains("hw:CARD=U0x46d0x825,DEV=0"), "{text}");
        let empty = render(&Probe::NotInstalled, &[], &[]);
        assert!(
            empty.contains("test pattern") && empty.contains("test tone"),
            "{empty}"
        );
    }

    #[test]
    fn report_without_a_v4l2_camera_says_so_and_points_to_the_camera_module() {
        let text = render(
            &Probe::NotInstalled,
            &[
                Node::NotCamera {
                    info: info("/dev/video0", "unicam", "unicam", 0x0520_0001),
                    reason: NotCamera::CameraModuleRaw,
                },
                Node::NotCamera {
                    info: info("/dev/video14", "bcm2835-isp", "bcm2835-isp", 0x0420_0001),
                    reason: NotCamera::Isp,
                },
            ],
            &[],
        );
        assert!(
            text.contains("none: no /dev/video* node here is a camera"),
            "{text}"
        );
        assert!(
            text.contains("no V4L2 camera; a Camera Module is attached"),
            "{text}"
        );
        assert!(
            text.contains(
                "/dev/video0   unicam       the Camera Module's raw sensor node: use [video] \
                 source = \"rpicam\""
            ),
            "{text}"
        );
        // An H.264-only camera is used only when passed through.
        let mut h264 = c270();
        for m in &mut h264.modes {
            m.fourcc = FourCc::H264;
        }
        let text = render(
            &Probe::NotInstalled,
            &[Node::Camera {
                info: info("/dev/video0", "uvcvideo", "H264 USB Camera", 0x0420_0001),
                caps: Ok(h264),
            }],
            &[],
        );
        assert!(text.contains("when \"h264\" is first"), "{text}");
    }

    #[test]
    fn report_lists_camera_modules_and_auto_takes_them_first() {
        let listing = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/rpicam/two-cameras.txt"
        ))
        .expect("fixture");
        let probe = Probe::Listed {
            program: "rpicam-vid",
            cameras: rpicam::parse_list_cameras(&listing),
        };
        let text = render(
            &probe,
            &[Node::Camera {
                info: info("/dev/video0", "uvcvideo", "HD Webcam C270", 0x0420_0001),
                caps: Ok(c270()),
            }],
            &[],
        );
        assert!(text.contains("  0  ov5647  2592x1944\n"), "{text}");
        assert!(text.contains("  1  imx708"), "{text}");
        assert!(
            text.contains("video.source = \"auto\" uses camera 0 (ov5647) through rpicam-vid"),
            "{text}"
        );
        assert!(
            text.contains(
                "\"auto\" uses the Camera Module (above); set source = \"/dev/video0\" for this \
                 camera"
            ),
            "{text}"
        );
        let none = Probe::Listed {
            program: "rpicam-vid",
            cameras: Vec::new(),
        };
        let text = render(&none, &[], &[]);
        assert!(text.contains("none: rpicam-vid lists no camera"), "{text}");
        let failed = Probe::Failed {
            program: "rpicam-vid",
            reason: "rpicam-vid --list-cameras did not finish within 5 s".into(),
        };
        assert!(render(&failed, &[], &[])
            .contains("not usable: rpicam-vid --list-cameras did not finish"));
    }
}
