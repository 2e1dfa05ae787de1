//! Camera format negotiation, without device access: which of the modes a camera lists
//! (format, size, frame rates) best fits what the configuration asks for.
//!
//! [`choose_mode`] takes the camera's [`Capabilities`] (from V4L2, or from
//! [`parse_list_formats_ext`] on a saved `v4l2-ctl --list-formats-ext` listing) and a
//! [`Request`], and explains its choice in [`Chosen::reason`] or, when nothing fits, in
//! [`NoMode`]'s message.

use std::fmt;

/// A V4L2 pixel format code.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FourCc {
    /// `YUYV`: packed 4:2:2, `Y0 U Y1 V`.
    Yuyv,
    /// `NV12`: Y plane, then interleaved `U V` at half height.
    Nv12,
    /// `YU12`: planar 4:2:0 (I420).
    Yu12,
    /// `MJPG`: one JPEG per frame.
    Mjpg,
    /// `H264`: the camera's own H.264 stream (only usable as passthrough).
    H264,
    /// Any other code, as the driver spells it (e.g. `UYVY`, `RGB3`, `pRAA`).
    Other(String),
}

impl FourCc {
    /// Parses a four-character code; the five known codes match case-insensitively, anything
    /// else becomes [`FourCc::Other`] with the code as given (surrounding spaces trimmed).
    pub fn parse(code: &str) -> FourCc {
        let code = code.trim();
        match code.to_ascii_uppercase().as_str() {
            "YUYV" => FourCc::Yuyv,
            "NV12" => FourCc::Nv12,
            "YU12" => FourCc::Yu12,
            "MJPG" => FourCc::Mjpg,
            "H264" => FourCc::H264,
            _ => FourCc::Other(code.to_owned()),
        }
    }

    /// The four-character code, e.g. `"YUYV"`.
    pub fn code(&self) -> &str {
        match self {
            FourCc::Yuyv => "YUYV",
            FourCc::Nv12 => "NV12",
            FourCc::Yu12 => "YU12",
            FourCc::Mjpg => "MJPG",
            FourCc::H264 => "H264",
            FourCc::Other(code) => code,
        }
    }

    /// True for the formats `convert` turns into I420 (YUYV, NV12, YU12, MJPG).
    pub fn is_convertible(&self) -> bool {
        matches!(
            self,
            FourCc::Yuyv | FourCc::Nv12 | FourCc::Yu12 | FourCc::Mjpg
        )
    }

    /// Cost order at one size, cheapest first: camera H.264 needs no encode; YU12 is I420
    /// already (row copies); NV12 de-interleaves chroma; YUYV also averages chroma rows;
    /// MJPEG needs a JPEG decode.
    fn cost_rank(&self) -> u8 {
        match self {
            FourCc::H264 => 0,
            FourCc::Yu12 => 1,
            FourCc::Nv12 => 2,
            FourCc::Yuyv => 3,
            FourCc::Mjpg => 4,
            FourCc::Other(_) => 5,
        }
    }
}

impl fmt::Display for FourCc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// One format and size a camera offers, with its discrete frame rates.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraMode {
    /// Pixel format.
    pub fourcc: FourCc,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frame rates offered at this size, highest first; empty when the driver lists none.
    pub fps: Vec<f32>,
}

/// What a camera offers.
#[derive(Debug, Clone, PartialEq)]
pub struct Capabilities {
    /// Device path, e.g. `/dev/video0`.
    pub device: String,
    /// The driver's card name, e.g. `HD Webcam C270`.
    pub card: String,
    /// Every format/size combination.
    pub modes: Vec<CameraMode>,
}

/// What the configuration asks of the camera.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Wanted width in pixels.
    pub width: u32,
    /// Wanted height in pixels.
    pub height: u32,
    /// Wanted frame rate.
    pub fps: u32,
    /// The camera's H.264 may be passed through (H.264 is the first configured codec).
    pub h264_passthrough_ok: bool,
    /// Capture only in this format (config `video.format`); `None` picks the cheapest.
    pub forced_format: Option<FourCc>,
    /// Wanted seconds between keyframes (set on H.264 cameras that have the control).
    pub keyframe_interval_s: u32,
}

/// The mode [`choose_mode`] picked.
#[derive(Debug, Clone, PartialEq)]
pub struct Chosen {
    /// Pixel format to set.
    pub fourcc: FourCc,
    /// Width to set.
    pub width: u32,
    /// Height to set.
    pub height: u32,
    /// Frame rate to set (the requested rate when the camera lists none).
    pub fps: f32,
    /// One line for the log: what was asked, what was picked and why.
    pub reason: String,
}

/// No mode of the camera fits; the message names the device, the problem and every mode the
/// camera offers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{device} ({card}) {problem}; it offers {offers}")]
pub struct NoMode {
    /// Device path.
    pub device: String,
    /// Card name.
    pub card: String,
    /// What is missing, e.g. `has no NV12 mode`.
    pub problem: String,
    /// The camera's modes, e.g. `YUYV 640x480@30,15; MJPG 1280x720@30`.
    pub offers: String,
}

/// Frame rates within this factor below the request count as reaching it (29.97 for 30).
const FPS_TOLERANCE: f32 = 0.99;
/// Modes listed in a [`NoMode`] message before the rest is summarised.
const MAX_LISTED_MODES: usize = 24;

/// Picks the mode closest to `req`.
///
/// 1. Size: the smallest absolute area difference to the request; ties go to a size at least
///    as large as asked, then to the closest aspect ratio.
/// 2. Format at that size: the cheapest ([`FourCc`] cost order: H.264 passthrough if allowed,
///    YU12, NV12, YUYV, MJPEG) among those that reach the requested frame rate; if none does,
///    the one with the highest rate. (So a USB 2 webcam whose YUYV 1280x720 only does 10 fps
///    gets MJPEG at 30.)
/// 3. Rate: the highest offered ≤ requested, else the lowest above it.
///
/// `req.forced_format` restricts step 1 and 2 to that format.
pub fn choose_mode(caps: &Capabilities, req: &Request) -> Result<Chosen, NoMode> {
    let no_mode = |problem: String| NoMode {
        device: caps.device.clone(),
        card: caps.card.clone(),
        problem,
        offers: describe_modes(&caps.modes),
    };
    if let Some(forced) = &req.forced_format {
        if !caps.modes.iter().any(|m| &m.fourcc == forced) {
            return Err(no_mode(format!("has no {forced} mode")));
        }
        if *forced == FourCc::H264 && !req.h264_passthrough_ok {
            return Err(no_mode(
                "cannot use its H264 mode: camera H.264 is passed through only when h264 is \
                 the first configured codec"
                    .to_owned(),
            ));
        }
        if !forced.is_convertible() && *forced != FourCc::H264 {
            return Err(no_mode(format!(
                "offers {forced}, which peercam cannot capture (it converts YUYV, NV12, YU12 \
                 and MJPG)"
            )));
        }
    }
    let usable = |m: &&CameraMode| {
        let format_ok =
            m.fourcc.is_convertible() || (m.fourcc == FourCc::H264 && req.h264_passthrough_ok);
        let forced_ok = req.forced_format.as_ref().is_none_or(|f| *f == m.fourcc);
        let size_ok =
            m.width > 0 && m.height > 0 && m.width.is_multiple_of(2) && m.height.is_multiple_of(2);
        format_ok && forced_ok && size_ok
    };
    let candidates: Vec<&CameraMode> = caps.modes.iter().filter(usable).collect();
    let Some(size) = candidates
        .iter()
        .map(|m| (m.width, m.height))
        .min_by_key(|&(w, h)| size_key(w, h, req))
    else {
        let passthrough = if req.h264_passthrough_ok {
            ", or H264 to pass through"
        } else {
            ""
        };
        return Err(no_mode(format!(
            "has no mode peercam can capture (YUYV, NV12, YU12 or MJPG{passthrough})"
        )));
    };
    let same_size: Vec<&CameraMode> = candidates
        .into_iter()
        .filter(|m| (m.width, m.height) == size)
        .collect();
    let need = req.fps as f32 * FPS_TOLERANCE;
    let reaches = |m: &CameraMode| m.fps.is_empty() || max_fps(m) >= need;
    let Some(mode) = same_size.iter().copied().max_by_key(|m| {
        let rank = -i64::from(m.fourcc.cost_rank());
        if reaches(m) {
            (true, rank, 0)
        } else {
            (false, (max_fps(m) * 1000.0) as i64, rank)
        }
    }) else {
        return Err(no_mode("has no usable mode".to_owned()));
    };
    let fps = pick_fps(&mode.fps, req.fps);
    let reason = explain(req, mode, fps, &same_size, reaches(mode));
    Ok(Chosen {
        fourcc: mode.fourcc.clone(),
        width: mode.width,
        height: mode.height,
        fps,
        reason,
    })
}

/// Sort key for sizes: area difference, then smaller-than-asked, then aspect difference.
fn size_key(w: u32, h: u32, req: &Request) -> (u64, bool, u64) {
    let area = u64::from(w) * u64::from(h);
    let wanted = u64::from(req.width) * u64::from(req.height);
    let aspect = |w: u32, h: u32| f64::from(w) / f64::from(h.max(1));
    let aspect_diff = (aspect(w, h) - aspect(req.width, req.height)).abs();
    (
        area.abs_diff(wanted),
        area < wanted,
        (aspect_diff * 1e6) as u64,
    )
}

fn max_fps(m: &CameraMode) -> f32 {
    m.fps.iter().copied().fold(0.0, f32::max)
}

/// The highest rate ≤ `wanted` (within [`FPS_TOLERANCE`]), else the lowest above it; the
/// requested rate itself when the camera lists none.
fn pick_fps(offered: &[f32], wanted: u32) -> f32 {
    let wanted = wanted as f32;
    let at_most = offered
        .iter()
        .copied()
        .filter(|&f| f <= wanted / FPS_TOLERANCE)
        .fold(None, |best: Option<f32>, f| {
            Some(best.map_or(f, |b| b.max(f)))
        });
    let above = || {
        offered.iter().copied().fold(None, |best: Option<f32>, f| {
            Some(best.map_or(f, |b| b.min(f)))
        })
    };
    at_most.or_else(above).unwrap_or(wanted)
}

/// The `reason` line: what was asked, what was picked, and why.
fn explain(
    req: &Request,
    mode: &CameraMode,
    fps: f32,
    same_size: &[&CameraMode],
    reached: bool,
) -> String {
    let mut why = Vec::new();
    if (mode.width, mode.height) == (req.width, req.height) {
        why.push("exact size".to_owned());
    } else {
        why.push(format!(
            "closest size offered to {}x{}",
            req.width, req.height
        ));
    }
    if req.forced_format.is_some() {
        why.push(format!(
            "format {} forced by the configuration",
            mode.fourcc
        ));
    } else if mode.fourcc == FourCc::H264 {
        why.push("camera H.264 passed through, no encoding".to_owned());
    } else {
        let slow: Vec<String> = same_size
            .iter()
            .filter(|m| m.fourcc.cost_rank() < mode.fourcc.cost_rank())
            .map(|m| format!("{} reaches only {} fps", m.fourcc, fmt_fps(max_fps(m))))
            .collect();
        if slow.is_empty() {
            why.push(format!(
                "{} is the cheapest format at this size",
                mode.fourcc
            ));
        } else {
            why.push(format!("{} because {}", mode.fourcc, slow.join(", ")));
        }
    }
    if mode.fps.is_empty() {
        why.push("the camera lists no frame rates".to_owned());
    } else if !reached {
        why.push(format!(
            "{} fps is the most this size offers",
            fmt_fps(max_fps(mode))
        ));
    } else if fps.round() as u32 != req.fps {
        why.push(format!("nearest rate offered is {} fps", fmt_fps(fps)));
    }
    format!(
        "asked {}x{}@{} fps, picked {} {}x{}@{} fps: {}",
        req.width,
        req.height,
        req.fps,
        mode.fourcc,
        mode.width,
        mode.height,
        fmt_fps(fps),
        why.join("; ")
    )
}

/// `30` for whole rates, `12.5` otherwise.
fn fmt_fps(f: f32) -> String {
    if (f - f.round()).abs() < 0.01 {
        format!("{f:.0}")
    } else {
        format!("{f:.1}")
    }
}

/// `YUYV 640x480@30,15; MJPG 1280x720@30; ...` (at most [`MAX_LISTED_MODES`] modes).
fn describe_modes(modes: &[CameraMode]) -> String {
    if modes.is_empty() {
        return "no capture modes".to_owned();
    }
    let mut parts: Vec<String> = modes
        .iter()
        .take(MAX_LISTED_MODES)
        .map(|m| {
            let rates: Vec<String> = m.fps.iter().map(|&f| fmt_fps(f)).collect();
            let rates = if rates.is_empty() {
                String::new()
            } else {
                format!("@{}", rates.join(","))
            };
            format!("{} {}x{}{}", m.fourcc, m.width, m.height, rates)
        })
        .collect();
    if modes.len() > MAX_LISTED_MODES {
        parts.push(format!("... ({} more)", modes.len() - MAX_LISTED_MODES));
    }
    parts.join("; ")
}

/// Common sizes offered for a stepwise/continuous size range (plus the range's maximum).
const STEPWISE_SIZES: [(u32, u32); 10] = [
    (160, 120),
    (320, 240),
    (352, 288),
    (640, 480),
    (800, 600),
    (1024, 768),
    (1280, 720),
    (1280, 960),
    (1920, 1080),
    (3840, 2160),
];

/// Parses `v4l2-ctl --list-formats-ext` output into [`Capabilities`].
///
/// Understands `[0]: 'YUYV' (YUYV 4:2:2)` (and older `Pixel Format: 'YUYV'`) lines,
/// `Size: Discrete WxH`, `Size: Stepwise/Continuous WxH - WxH with step a/b` (expanded to the
/// common sizes in range plus the maximum), and `Interval: ... (30.000 fps)` or
/// `(1.000-30.000 fps)`. Lines it does not recognise are skipped.
pub fn parse_list_formats_ext(device: &str, card: &str, text: &str) -> Capabilities {
    let mut modes: Vec<CameraMode> = Vec::new();
    let mut fourcc: Option<FourCc> = None;
    // Modes created by the current `Size:` line; following intervals apply to them.
    let mut size_start = 0;
    for line in text.lines().map(str::trim) {
        if let Some(code) = quoted_fourcc(line) {
            fourcc = Some(FourCc::parse(code));
        } else if let (Some(rest), Some(f)) = (line.strip_prefix("Size:"), &fourcc) {
            size_start = modes.len();
            for (width, height) in parse_sizes(rest) {
                modes.push(CameraMode {
                    fourcc: f.clone(),
                    width,
                    height,
                    fps: Vec::new(),
                });
            }
        } else if line.starts_with("Interval:") {
            let rates = parse_rates(line);
            for m in modes.iter_mut().skip(size_start) {
                m.fps.extend(&rates);
            }
        }
    }
    for m in &mut modes {
        m.fps.sort_by(|a, b| b.total_cmp(a));
        m.fps.dedup();
    }
    Capabilities {
        device: device.to_owned(),
        card: card.to_owned(),
        modes,
    }
}

/// The code in `[0]: 'YUYV' (...)` or `Pixel Format: 'YUYV'`.
fn quoted_fourcc(line: &str) -> Option<&str> {
    let is_format = line.starts_with('[') || line.starts_with("Pixel Format:");
    if !is_format {
        return None;
    }
    let start = line.find('\'')? + 1;
    let len = line[start..].find('\'')?;
    Some(&line[start..start + len])
}

fn parse_wxh(s: &str) -> Option<(u32, u32)> {
    let (w, h) = s.trim().split_once('x')?;
    Some((w.trim().parse().ok()?, h.trim().parse().ok()?))
}

/// ` Discrete 640x480` or ` Stepwise 32x32 - 2592x1944 with step 2/2`.
fn parse_sizes(rest: &str) -> Vec<(u32, u32)> {
    let rest = rest.trim();
    if let Some(size) = rest.strip_prefix("Discrete") {
        return parse_wxh(size).into_iter().collect();
    }
    let Some(range) = rest
        .strip_prefix("Stepwise")
        .or_else(|| rest.strip_prefix("Continuous"))
    else {
        return Vec::new();
    };
    let (range, step) = range.split_once("with step").unwrap_or((range, "1/1"));
    let Some((min, max)) = range.split_once('-') else {
        return Vec::new();
    };
    let (Some(min), Some(max)) = (parse_wxh(min), parse_wxh(max)) else {
        return Vec::new();
    };
    let step = step
        .trim()
        .split_once('/')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
        .unwrap_or((1, 1));
    let fits = |(w, h): (u32, u32)| {
        (min.0..=max.0).contains(&w)
            && (min.1..=max.1).contains(&h)
            && (w - min.0) % step.0.max(1) == 0
            && (h - min.1) % step.1.max(1) == 0
    };
    let mut sizes: Vec<(u32, u32)> = STEPWISE_SIZES.into_iter().filter(|&s| fits(s)).collect();
    if !sizes.contains(&max) {
        sizes.push(max);
    }
    sizes
}

/// Frame rates from `... (30.000 fps)` or `... (1.000-30.000 fps)`.
fn parse_rates(line: &str) -> Vec<f32> {
    let Some(open) = line.rfind('(') else {
        return Vec::new();
    };
    let inner = line[open + 1..].trim_end_matches(')');
    let Some(numbers) = inner.trim().strip_suffix("fps") else {
        return Vec::new();
    };
    let rates: Vec<f32> = numbers
        .split('-')
        .filter_map(|n| n.trim().parse::<f32>().ok())
        .filter(|f| f.is_finite() && *f > 0.0)
        .map(|f| (f * 1000.0).round() / 1000.0)
        .collect();
    match rates[..] {
        [a, b] => stepwise_rates(a.min(b), a.max(b)),
        _ => rates,
    }
}

/// Common rates a camera can use within a stepwise/continuous interval range, plus the
/// range's ends, highest first. (Listing only the ends would make a 1–90 fps camera asked
/// for 30 fps pick 1 fps.)
pub fn stepwise_rates(min_fps: f32, max_fps: f32) -> Vec<f32> {
    let mut rates: Vec<f32> = STEPWISE_RATES
        .into_iter()
        .filter(|&f| f >= min_fps && f <= max_fps)
        .chain([min_fps, max_fps])
        .filter(|f| f.is_finite() && *f > 0.0)
        .collect();
    rates.sort_by(|a, b| b.total_cmp(a));
    rates.dedup();
    rates
}

/// Common rates offered for a stepwise/continuous interval range.
const STEPWISE_RATES: [f32; 10] = [5.0, 10.0, 15.0, 20.0, 24.0, 25.0, 30.0, 50.0, 60.0, 90.0];

#[cfg(test)]
mod tests;
