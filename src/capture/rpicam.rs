//! The Raspberry Pi Camera Module through `rpicam-vid` (rpicam-apps; `libcamera-vid` on older
//! systems): which cameras it lists, which boards have a hardware H.264 encoder, and the
//! command line peercam runs it with. Everything here is plain text in and out, tested
//! against the output rpicam-apps prints (`tests/fixtures/rpicam/`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The program names tried, newest first.
pub const PROGRAMS: [&str; 2] = ["rpicam-vid", "libcamera-vid"];

/// One camera `--list-cameras` lists.
#[derive(Debug, Clone, PartialEq)]
pub struct RpiCamera {
    /// The index `--camera` takes.
    pub index: u32,
    /// The sensor model, e.g. `imx708` (Camera Module 3), `imx219` (2), `ov5647` (1),
    /// `imx477` (HQ).
    pub sensor: String,
    /// The sensor's full size.
    pub size: Option<(u32, u32)>,
    /// Its sensor modes: size and highest frame rate, every pixel format together.
    pub modes: Vec<SensorMode>,
}

/// One sensor mode of [`RpiCamera`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SensorMode {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The highest frame rate in this mode.
    pub fps: f32,
}

/// The cameras in `rpicam-vid --list-cameras` output (empty for "No cameras available!" or
/// text it does not recognise).
pub fn parse_list_cameras(output: &str) -> Vec<RpiCamera> {
    let mut cameras: Vec<RpiCamera> = Vec::new();
    for line in output.lines() {
        let trimmed = line.trim();
        if let Some(camera) = camera_line(trimmed) {
            cameras.push(camera);
            continue;
        }
        let Some(camera) = cameras.last_mut() else {
            continue;
        };
        // "Modes: 'SRGGB10_CSI2P' : 640x480 [103.33 fps - ...", "'SRGGB8' : 640x480 [...",
        // or a size alone on a continuation line.
        let rest = trimmed.strip_prefix("Modes:").unwrap_or(trimmed).trim();
        let rest = match rest.strip_prefix('\'') {
            Some(quoted) => match quoted.split_once("' :") {
                Some((_, after)) => after.trim(),
                None => continue,
            },
            None => rest,
        };
        if let Some(mode) = mode_of(rest) {
            match camera
                .modes
                .iter_mut()
                .find(|m| (m.width, m.height) == (mode.width, mode.height))
            {
                Some(known) => known.fps = known.fps.max(mode.fps),
                None => camera.modes.push(mode),
            }
        }
    }
    cameras
}

/// `0 : imx219 [3280x2464 10-bit RGGB] (/base/soc/i2c0mux/i2c@1/imx219@10)`.
fn camera_line(line: &str) -> Option<RpiCamera> {
    let (index, rest) = line.split_once(" : ")?;
    let index = index.trim().parse().ok()?;
    let sensor = rest.split_whitespace().next()?.to_owned();
    if sensor.starts_with('\'') {
        return None;
    }
    let size = rest
        .split_once('[')
        .and_then(|(_, r)| r.split([' ', ']']).next())
        .and_then(size_of);
    Some(RpiCamera {
        index,
        sensor,
        size,
        modes: Vec::new(),
    })
}

/// `640x480 [103.33 fps - (1000, 752)/1280x960 crop]`.
fn mode_of(text: &str) -> Option<SensorMode> {
    let (size, rest) = text.split_once(' ')?;
    let (width, height) = size_of(size)?;
    let fps = rest
        .trim()
        .strip_prefix('[')?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(SensorMode { width, height, fps })
}

fn size_of(text: &str) -> Option<(u32, u32)> {
    let (w, h) = text.split_once('x')?;
    Some((w.parse().ok()?, h.parse().ok()?))
}

/// Whether the board named `model` (`/proc/device-tree/model`, e.g. `Raspberry Pi 4 Model B
/// Rev 1.4`) has the VideoCore H.264 encoder rpicam-vid uses: every Raspberry Pi before the
/// Pi 5 (Zero, 1–4, the Compute Modules 1–4). The Pi 5, the Pi 500 and the Compute Module 5
/// have none: there rpicam-vid's H.264 is a software encoder, and peercam's own is better
/// placed (it adapts to the viewers).
pub fn has_hardware_h264(model: &str) -> bool {
    let model = model.trim_end_matches('\0').trim();
    let Some(rest) = model.strip_prefix("Raspberry Pi ") else {
        return false;
    };
    let rest = rest.strip_prefix("Compute Module ").unwrap_or(rest);
    let generation = rest.split_whitespace().next().unwrap_or_default();
    !matches!(generation, "5" | "500" | "500+")
}

/// How long `--list-cameras` may take before peercam gives up on it (libcamera starts in well
/// under a second on a Pi; a hung camera stack must not hold the daemon's start).
pub const LIST_TIMEOUT: Duration = Duration::from_secs(5);

/// At most this much of a child's output is read (the listing is a few hundred bytes).
const LIST_OUTPUT_LIMIT: u64 = 64 * 1024;

/// The first of [`PROGRAMS`] found on `PATH`, with its full path.
pub fn find_program() -> Option<(&'static str, PathBuf)> {
    let path = std::env::var_os("PATH")?;
    PROGRAMS.into_iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| is_executable(candidate))
            .map(|found| (name, found))
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// What `rpicam-vid --list-cameras` says on this machine.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    /// Neither `rpicam-vid` nor `libcamera-vid` is on `PATH`.
    NotInstalled,
    /// `program` listed these cameras (none when it printed "No cameras available!").
    Listed {
        /// The program that ran, e.g. `rpicam-vid`.
        program: &'static str,
        /// The cameras, by `--camera` index.
        cameras: Vec<RpiCamera>,
    },
    /// `program` could not be run, or did not answer within [`LIST_TIMEOUT`].
    Failed {
        /// The program that was tried.
        program: &'static str,
        /// Why, for the log.
        reason: String,
    },
}

impl Probe {
    /// The cameras listed (empty unless [`Probe::Listed`]).
    pub fn cameras(&self) -> &[RpiCamera] {
        match self {
            Probe::Listed { cameras, .. } => cameras,
            _ => &[],
        }
    }
}

/// Runs `rpicam-vid --list-cameras` (or `libcamera-vid`), waiting at most `timeout`.
pub fn probe(timeout: Duration) -> Probe {
    let Some((program, path)) = find_program() else {
        return Probe::NotInstalled;
    };
    match run_bounded(&path, &["--list-cameras"], timeout) {
        Ok(output) => Probe::Listed {
            program,
            cameras: parse_list_cameras(&output),
        },
        Err(reason) => Probe::Failed { program, reason },
    }
}

/// Runs `program args`, returns its stdout and stderr together (at most
/// [`LIST_OUTPUT_LIMIT`] bytes of each), and kills it if it has not finished by `timeout`.
fn run_bounded(program: &Path, args: &[&str], timeout: Duration) -> Result<String, String> {
    use std::io::Read as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|r| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = r.take(LIST_OUTPUT_LIMIT).read_to_string(&mut text);
            text
        })
    })
    .collect();
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} --list-cameras did not finish within {} s",
                    program.display(),
                    timeout.as_secs()
                ));
            }
            Err(e) => return Err(format!("waiting for {}: {e}", program.display())),
        }
    };
    let output: String = readers
        .into_iter()
        .map(|t| t.join().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    // "No cameras available!" comes with exit status 0; a broken camera stack exits non-zero.
    if !status.success() && parse_list_cameras(&output).is_empty() {
        let first = output
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(format!(
            "{} --list-cameras failed ({status}): {}",
            program.display(),
            crate::logging::client_str(first).max(200)
        ));
    }
    Ok(output)
}

/// The camera `auto` takes among `cameras`: `preferred` (`[rpicam] camera`) when listed,
/// else the first.
pub fn pick(cameras: &[RpiCamera], preferred: u32) -> Option<&RpiCamera> {
    cameras
        .iter()
        .find(|c| c.index == preferred)
        .or(cameras.first())
}

/// The board's model (`/proc/device-tree/model`), e.g. `Raspberry Pi 4 Model B Rev 1.4`;
/// `None` off device-tree boards (x86).
pub fn board_model() -> Option<String> {
    let raw = std::fs::read("/proc/device-tree/model").ok()?;
    let model = String::from_utf8_lossy(&raw)
        .trim_end_matches('\0')
        .trim()
        .to_owned();
    (!model.is_empty()).then_some(model)
}

/// How rpicam-vid hands frames to peercam.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// H.264 from the Pi's encoder (`--codec h264 --inline`), passed through to viewers.
    H264,
    /// Raw I420 frames (`--codec yuv420`) for peercam's own encoders.
    Yuv420,
}

/// What rpicam-vid is asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// `--camera N`.
    pub camera: u32,
    /// Frame size.
    pub width: u32,
    /// Frame height.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// H.264 or raw frames.
    pub output: Output,
    /// Frames between H.264 keyframes (`--intra`); keyframe requests cannot reach the Pi's
    /// encoder through rpicam-vid, so this bounds how long a new viewer waits.
    pub keyframe_interval_frames: u32,
    /// H.264 bitrate in kbit/s.
    pub bitrate_kbps: u32,
    /// `--rotation` (0 or 180).
    pub rotation: u32,
    /// `--hflip`.
    pub hflip: bool,
    /// `--vflip`.
    pub vflip: bool,
    /// More arguments, as written in the config (the escape hatch).
    pub extra_args: Vec<String>,
}

impl Request {
    /// The arguments after the program name: run until stopped, no preview window, frames
    /// to stdout.
    pub fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "--timeout".into(),
            "0".into(),
            "--nopreview".into(),
            "--camera".into(),
            self.camera.to_string(),
            "--width".into(),
            self.width.to_string(),
            "--height".into(),
            self.height.to_string(),
            "--framerate".into(),
            self.fps.to_string(),
        ];
        match self.output {
            Output::H264 => args.extend([
                "--codec".into(),
                "h264".into(),
                // SPS and PPS before every keyframe: a viewer can start at any of them.
                "--inline".into(),
                "--intra".into(),
                self.keyframe_interval_frames.max(1).to_string(),
                // Constrained Baseline decodes in every browser.
                "--profile".into(),
                "baseline".into(),
                "--bitrate".into(),
                format!("{}kbps", self.bitrate_kbps),
                // Each frame is written out at once rather than when the buffer fills.
                "--flush".into(),
            ]),
            Output::Yuv420 => args.extend(["--codec".into(), "yuv420".into(), "--flush".into()]),
        }
        if self.rotation != 0 {
            args.extend(["--rotation".into(), self.rotation.to_string()]);
        }
        if self.hflip {
            args.push("--hflip".into());
        }
        if self.vflip {
            args.push("--vflip".into());
        }
        args.extend(self.extra_args.iter().cloned());
        args.extend(["--output".into(), "-".into()]);
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!(
            "{}/tests/fixtures/rpicam/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn a_pi_4_camera_module_2_with_its_modes() {
        let cameras = parse_list_cameras(&fixture("pi4-imx219.txt"));
        assert_eq!(cameras.len(), 1);
        let c = &cameras[0];
        assert_eq!(
            (c.index, c.sensor.as_str(), c.size),
            (0, "imx219", Some((3280, 2464)))
        );
        let sizes: Vec<(u32, u32)> = c.modes.iter().map(|m| (m.width, m.height)).collect();
        assert_eq!(
            sizes,
            [(640, 480), (1640, 1232), (1920, 1080), (3280, 2464)]
        );
        assert!((c.modes[0].fps - 103.33).abs() < 0.01);
    }

    #[test]
    fn a_pi_5_path_two_cameras_and_none() {
        let pi5 = parse_list_cameras(&fixture("pi5-imx219.txt"));
        assert_eq!(pi5[0].sensor, "imx219");
        // The faster of the two pixel formats' rates at 1640x1232.
        let mode = pi5[0].modes.iter().find(|m| m.width == 1640).expect("1640");
        assert!((mode.fps - 83.70).abs() < 0.01, "{mode:?}");
        let two = parse_list_cameras(&fixture("two-cameras.txt"));
        let names: Vec<(u32, &str)> = two.iter().map(|c| (c.index, c.sensor.as_str())).collect();
        assert_eq!(names, [(0, "ov5647"), (1, "imx708")]);
        assert_eq!(two[0].size, Some((2592, 1944)));
        assert_eq!(two[1].modes.len(), 3);
        assert!(parse_list_cameras(&fixture("none.txt")).is_empty());
        assert!(parse_list_cameras("rpicam-vid: command not found").is_empty());
    }

    #[test]
    fn only_pis_before_the_5_have_the_hardware_encoder() {
        for model in [
            "Raspberry Pi 4 Model B Rev 1.4\0",
            "Raspberry Pi 3 Model B Plus Rev 1.3",
            "Raspberry Pi Zero 2 W Rev 1.0",
            "Raspberry Pi Zero W Rev 1.1",
            "Raspberry Pi Compute Module 4 Rev 1.0",
            "Raspberry Pi Model B Rev 2",
        ] {
            assert!(has_hardware_h264(model), "{model}");
        }
        for model in [
            "Raspberry Pi 5 Model B Rev 1.0",
            "Raspberry Pi Compute Module 5 Rev 1.0",
            "Raspberry Pi 500 Rev 1.0",
            "Radxa ROCK 5B",
            "",
        ] {
            assert!(!has_hardware_h264(model), "{model}");
        }
    }

    #[test]
    fn the_command_line_asks_for_what_the_config_says() {
        let mut request = Request {
            camera: 1,
            width: 1280,
            height: 720,
            fps: 30,
            output: Output::H264,
            keyframe_interval_frames: 60,
            bitrate_kbps: 1500,
            rotation: 180,
            hflip: true,
            vflip: false,
            extra_args: vec!["--denoise".into(), "cdn_off".into()],
        };
        assert_eq!(
            request.args().join(" "),
            "--timeout 0 --nopreview --camera 1 --width 1280 --height 720 --framerate 30 \
             --codec h264 --inline --intra 60 --profile baseline --bitrate 1500kbps --flush \
             --rotation 180 --hflip --denoise cdn_off --output -"
        );
        request.output = Output::Yuv420;
        request.rotation = 0;
        request.hflip = false;
        request.extra_args.clear();
        assert_eq!(
            request.args().join(" "),
            "--timeout 0 --nopreview --camera 1 --width 1280 --height 720 --framerate 30 \
             --codec yuv420 --flush --output -"
        );
    }
}
