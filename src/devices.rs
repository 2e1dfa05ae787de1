//! `peercam --list-devices`: every V4L2 capture device with its formats, sizes and frame
//! rates, and every ALSA capture device, as a readable table.

use std::fmt::Write as _;
use std::path::PathBuf;

use crate::capture::alsa::{list_capture_devices, AlsaDevice};
use crate::capture::formats::{CameraMode, Capabilities};
use crate::capture::v4l2;

/// The whole report, as printed.
pub fn report() -> String {
    render(&v4l2::list_devices(), &list_capture_devices())
}

/// Formats the report from already-gathered lists (testable without devices).
pub fn render(
    cameras: &[(PathBuf, Result<Capabilities, String>)],
    microphones: &[AlsaDevice],
) -> String {
    let mut out = String::new();
    out.push_str("Cameras (V4L2)\n");
    if cameras.is_empty() {
        out.push_str("  none found (no /dev/video* nodes): video.source = \"auto\" streams the test pattern\n");
    }
    for (path, caps) in cameras {
        match caps {
            Ok(caps) => {
                let _ = writeln!(out, "  {}  {}", path.display(), caps.card);
                let _ = writeln!(out, "    {:<6} {:>11}  frame rates (fps)", "format", "size");
                for line in mode_lines(&caps.modes) {
                    let _ = writeln!(out, "    {line}");
                }
                if caps.modes.is_empty() {
                    out.push_str("    (no capture formats listed)\n");
                }
            }
            Err(e) => {
                let _ = writeln!(out, "  {}  not usable: {e}", path.display());
            }
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
    use super::*;
    use crate::capture::formats::FourCc;

    #[test]
    fn report_lists_cameras_modes_and_microphones() {
        let caps = Capabilities {
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
        };
        let text = render(
            &[
                (PathBuf::from("/dev/video0"), Ok(caps)),
                (
                    PathBuf::from("/dev/video1"),
                    Err("not a video capture device".into()),
                ),
            ],
            &[AlsaDevice {
                name: "hw:CARD=U0x46d0x825,DEV=0".into(),
                description: "USB Device 0x46d:0x825, USB Audio".into(),
            }],
        );
        assert!(text.contains("/dev/video0  HD Webcam C270"), "{text}");
        assert!(text.contains("YUYV       640x480  30, 15"), "{text}");
        assert!(text.contains("MJPG      1280x720  30, 12.5"), "{text}");
        assert!(text.contains("/dev/video1  not usable"), "{text}");
        assert!(text.contains("hw:CARD=U0x46d0x825,DEV=0"), "{text}");
        let empty = render(&[], &[]);
        assert!(
            empty.contains("test pattern") && empty.contains("test tone"),
            "{empty}"
        );
    }
}
