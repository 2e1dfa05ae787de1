//! A stand-in for `rpicam-vid` (rpicam-apps) in the tests, where there is no Camera Module:
//! the tests link it onto `PATH` as `rpicam-vid` and peercam runs it as it runs the real one.
//!
//! It takes rpicam-vid's command line as peercam writes it and refuses anything else the way
//! rpicam-vid does (`ERROR: *** unrecognised option ... ***`, exit status 255). It streams the
//! test pattern, paced at `--framerate`, at `--width` x `--height`, flipped as `--hflip`,
//! `--vflip` and `--rotation 180` say, to `--output -`:
//! - `--codec h264`: real Annex B H.264 (openh264, `--profile baseline`, `--bitrate`), an IDR
//!   every `--intra` frames, SPS and PPS before each IDR with `--inline` (before the first
//!   only without it);
//! - `--codec yuv420`: raw I420 with rows padded to 64 bytes as the Pi 5's ISP pads them.
//!
//! `--list-cameras` prints what rpicam-apps prints for one Camera Module 2 on a Pi 4.
//!
//! Knobs, from the environment (peercam's children inherit the daemon's):
//! - `RPICAM_STANDIN_LOG=FILE`: append one line per run, `start <arguments>`;
//! - `RPICAM_STANDIN_CAMERAS=none`: `--list-cameras` finds none;
//! - `RPICAM_STANDIN_FAIL=TEXT`: fail at start with `ERROR: *** TEXT ***`, exit status 1;
//! - `RPICAM_STANDIN_EXIT_AFTER=N`: exit with status 1 after N frames, saying why;
//! - `RPICAM_STANDIN_STALL_AFTER=N`: stop writing after N frames and hang until killed;
//! - `RPICAM_STANDIN_ONCE=FILE`: the knobs above apply only while FILE does not exist, and
//!   the first run that applies one creates it (a camera that fails once, then recovers).

use std::io::Write as _;
use std::process::ExitCode;

use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Profile,
    RateControlMode, UsageType,
};
use openh264::formats::YUVSlices;
use openh264::OpenH264API;
use peercam::capture::test_pattern::TestPattern;
use peercam::h264::{nal_type, nal_units, NAL_IDR, NAL_PPS, NAL_SPS, START_CODE};

/// Rows of raw frames are padded to this many bytes.
const ROW_ALIGN: usize = 64;

const LISTING: &str = "Available cameras
-----------------
0 : imx219 [3280x2464 10-bit RGGB] (/base/soc/i2c0mux/i2c@1/imx219@10)
    Modes: 'SRGGB10_CSI2P' : 640x480 [103.33 fps - (1000, 752)/1280x960 crop]
                             1640x1232 [41.85 fps - (0, 0)/3280x2464 crop]
                             1920x1080 [47.57 fps - (680, 692)/1920x1080 crop]
                             3280x2464 [21.19 fps - (0, 0)/3280x2464 crop]
";

/// Options that take a value, and flags that do not.
const WITH_VALUE: &[&str] = &[
    "--timeout",
    "--camera",
    "--width",
    "--height",
    "--framerate",
    "--codec",
    "--intra",
    "--profile",
    "--bitrate",
    "--rotation",
    "--output",
    "--denoise",
];
const FLAGS: &[&str] = &["--nopreview", "--inline", "--flush", "--hflip", "--vflip"];

#[derive(Debug)]
struct Options {
    width: u32,
    height: u32,
    fps: u32,
    h264: bool,
    intra: u32,
    bitrate_bps: u32,
    inline: bool,
    hflip: bool,
    vflip: bool,
}

fn fail(status: u8, text: &str) -> ExitCode {
    eprintln!("ERROR: *** {text} ***");
    ExitCode::from(status)
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Ok(log) = std::env::var("RPICAM_STANDIN_LOG") {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            let _ = writeln!(f, "start {}", args.join(" "));
        }
    }
    if args.iter().any(|a| a == "--list-cameras") {
        if std::env::var("RPICAM_STANDIN_CAMERAS").as_deref() == Ok("none") {
            println!("No cameras available!");
        } else {
            print!("{LISTING}");
        }
        return ExitCode::SUCCESS;
    }
    let options = match parse(&args) {
        Ok(o) => o,
        Err(e) => return fail(255, &e),
    };
    // Knobs apply once when RPICAM_STANDIN_ONCE names a file that does not exist yet.
    let once = std::env::var("RPICAM_STANDIN_ONCE").ok();
    let knobs_apply = once
        .as_deref()
        .is_none_or(|f| !std::path::Path::new(f).exists());
    let used_knob = || {
        if let Some(f) = &once {
            let _ = std::fs::write(f, "used");
        }
    };
    eprintln!("[0:00:00.100000000] [4242]  INFO Camera camera_manager.cpp:327 libcamera v0.3.0+rpt20240617");
    eprintln!(
        "Mode selection for {}:{}:12:P",
        options.width, options.height
    );
    if knobs_apply {
        if let Ok(text) = std::env::var("RPICAM_STANDIN_FAIL") {
            used_knob();
            return fail(1, &text);
        }
    }
    let exit_after = env_number("RPICAM_STANDIN_EXIT_AFTER").filter(|_| knobs_apply);
    let stall_after = env_number("RPICAM_STANDIN_STALL_AFTER").filter(|_| knobs_apply);
    match stream(&options, exit_after, stall_after, used_knob) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, &e),
    }
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        width: 640,
        height: 480,
        fps: 30,
        h264: true,
        intra: 60,
        bitrate_bps: 1_000_000,
        inline: false,
        hflip: false,
        vflip: false,
    };
    let mut output = None;
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        if FLAGS.contains(&arg) {
            match arg {
                "--inline" => o.inline = true,
                "--hflip" => o.hflip = !o.hflip,
                "--vflip" => o.vflip = !o.vflip,
                _ => {}
            }
            i += 1;
            continue;
        }
        if !WITH_VALUE.contains(&arg) {
            return Err(format!("unrecognised option '{arg}'"));
        }
        let value = args
            .get(i + 1)
            .ok_or_else(|| format!("option '{arg}' needs a value"))?
            .as_str();
        let number = || {
            value
                .parse::<u32>()
                .map_err(|_| format!("the argument ('{value}') for option '{arg}' is invalid"))
        };
        match arg {
            "--width" => o.width = number()?,
            "--height" => o.height = number()?,
            "--framerate" => o.fps = number()?.max(1),
            "--intra" => o.intra = number()?.max(1),
            "--codec" => match value {
                "h264" => o.h264 = true,
                "yuv420" => o.h264 = false,
                other => return Err(format!("unrecognised codec {other}")),
            },
            "--bitrate" => {
                let kbps = value.strip_suffix("kbps").unwrap_or(value);
                o.bitrate_bps = kbps
                    .parse::<u32>()
                    .map_err(|_| format!("invalid bitrate {value}"))?
                    * 1000;
            }
            "--rotation" => match value {
                "0" => {}
                "180" => {
                    o.hflip = !o.hflip;
                    o.vflip = !o.vflip;
                }
                _ => return Err("transform requires rotation 0 or 180".to_owned()),
            },
            "--profile" if value != "baseline" => {
                return Err(format!(
                    "stand-in only does the baseline profile, not {value}"
                ))
            }
            "--output" => output = Some(value.to_owned()),
            _ => {}
        }
        i += 2;
    }
    if output.as_deref() != Some("-") {
        return Err("the stand-in writes only to stdout (--output -)".to_owned());
    }
    if !o.width.is_multiple_of(2) || !o.height.is_multiple_of(2) || o.width < 64 || o.height < 64 {
        return Err(format!("bad size {}x{}", o.width, o.height));
    }
    Ok(o)
}

fn stream(
    o: &Options,
    exit_after: Option<u64>,
    stall_after: Option<u64>,
    used_knob: impl Fn(),
) -> Result<(), String> {
    let mut pattern = TestPattern::new(o.width, o.height, o.fps);
    let mut encoder = if o.h264 {
        let config = EncoderConfig::new()
            .usage_type(UsageType::CameraVideoRealTime)
            .profile(Profile::Baseline)
            .rate_control_mode(RateControlMode::Bitrate)
            .bitrate(BitRate::from_bps(o.bitrate_bps))
            .max_frame_rate(FrameRate::from_hz(o.fps as f32))
            .skip_frames(false)
            .complexity(Complexity::Low)
            .intra_frame_period(IntraFramePeriod::from_num_frames(o.intra))
            .scene_change_detect(false);
        Some(
            Encoder::with_api_config(OpenH264API::from_source(), config)
                .map_err(|e| format!("encoder: {e}"))?,
        )
    } else {
        None
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let (w, h) = (o.width as usize, o.height as usize);
    let mut picture = vec![0u8; w * h * 3 / 2];
    let mut sent_parameter_sets = false;
    for frame_number in 0u64.. {
        if exit_after == Some(frame_number) {
            used_knob();
            return Err("simulated camera failure: the sensor stopped".to_owned());
        }
        if stall_after == Some(frame_number) {
            used_knob();
            eprintln!("WARNING: simulated stall");
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
        let raw = pattern.next_raw().map_err(|e| e.to_string())?;
        let (y, u, v) = raw.planes();
        flip_into(&mut picture, (y, u, v), w, h, o.hflip, o.vflip);
        let (py, pc) = picture.split_at(w * h);
        let (pu, pv) = pc.split_at(w * h / 4);
        let bytes = match encoder.as_mut() {
            Some(encoder) => {
                let yuv = YUVSlices::new((py, pu, pv), (w, h), (w, w / 2, w / 2));
                let stream = encoder.encode(&yuv).map_err(|e| e.to_string())?;
                if matches!(stream.frame_type(), FrameType::Skip | FrameType::Invalid) {
                    continue;
                }
                let encoded = stream.to_vec();
                let mut data = Vec::with_capacity(encoded.len() + 16);
                for unit in nal_units(&encoded) {
                    let parameter_set = matches!(nal_type(unit), NAL_SPS | NAL_PPS);
                    if parameter_set && sent_parameter_sets && !o.inline {
                        continue;
                    }
                    data.extend_from_slice(&START_CODE);
                    data.extend_from_slice(unit);
                }
                if nal_units(&data).iter().any(|u| nal_type(u) == NAL_IDR) {
                    sent_parameter_sets = true;
                }
                data
            }
            None => padded(&picture, w, h),
        };
        if out.write_all(&bytes).and_then(|()| out.flush()).is_err() {
            // The reader went away (peercam stopped it).
            return Ok(());
        }
    }
    Ok(())
}

/// Copies the three planes into `dst` (tightly packed I420), mirrored as asked.
fn flip_into(
    dst: &mut [u8],
    planes: (&[u8], &[u8], &[u8]),
    w: usize,
    h: usize,
    hflip: bool,
    vflip: bool,
) {
    let (dy, dc) = dst.split_at_mut(w * h);
    let (du, dv) = dc.split_at_mut(w * h / 4);
    for (src, dst, pw, ph) in [
        (planes.0, dy, w, h),
        (planes.1, du, w / 2, h / 2),
        (planes.2, dv, w / 2, h / 2),
    ] {
        for row in 0..ph {
            let from = if vflip { ph - 1 - row } else { row };
            let src_row = &src[from * pw..(from + 1) * pw];
            let dst_row = &mut dst[row * pw..(row + 1) * pw];
            dst_row.copy_from_slice(src_row);
            if hflip {
                dst_row.reverse();
            }
        }
    }
}

/// I420 with each plane's rows padded as libcamera's buffers are: luma rows to
/// [`ROW_ALIGN`] bytes, chroma rows to half that.
fn padded(picture: &[u8], w: usize, h: usize) -> Vec<u8> {
    let stride = w.div_ceil(ROW_ALIGN) * ROW_ALIGN;
    if stride == w {
        return picture.to_vec();
    }
    let mut out = vec![0u8; stride * h * 3 / 2];
    let (oy, oc) = out.split_at_mut(stride * h);
    let (ou, ov) = oc.split_at_mut(stride * h / 4);
    let (py, pc) = picture.split_at(w * h);
    let (pu, pv) = pc.split_at(w * h / 4);
    for (src, dst, pw, ps, ph) in [
        (py, oy, w, stride, h),
        (pu, ou, w / 2, stride / 2, h / 2),
        (pv, ov, w / 2, stride / 2, h / 2),
    ] {
        for row in 0..ph {
            dst[row * ps..row * ps + pw].copy_from_slice(&src[row * pw..(row + 1) * pw]);
        }
    }
    out
}
