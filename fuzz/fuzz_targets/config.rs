//! The config parser (`peercam::config::parse_str`, what `peercam check-config` and every
//! start and reload run on the TOML file).
//!
//! Input: the file's text (bytes that are not UTF-8 are replaced: the daemon reads the file
//! with `read_to_string`, which refuses them before parsing). Properties: never panics;
//! an error renders (Display, Debug) without panicking and names the file; accepted settings
//! are within the documented ranges.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peercam::config::parse_str;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match parse_str(&text, "fuzz.toml") {
        Ok(settings) => {
            let v = &settings.video;
            assert!(v.width % 2 == 0 && (160..=3840).contains(&v.width), "{v:?}");
            assert!(
                v.height % 2 == 0 && (120..=2160).contains(&v.height),
                "{v:?}"
            );
            assert!((1..=60).contains(&v.fps), "{v:?}");
            assert!(!v.codecs.is_empty(), "{v:?}");
            let w = &settings.webrtc;
            assert!(w.udp_port_min <= w.udp_port_max, "{w:?}");
        }
        Err(e) => {
            let shown = e.to_string();
            assert!(shown.contains("fuzz.toml"), "{shown}");
            if let Some(at) = e.invalid() {
                // The location is a place in the text (1-based; the line after the last one
                // for an error at the end).
                assert!(at.line >= 1 && at.column >= 1, "{shown}");
                assert!(at.line <= text.split('\n').count(), "{shown}");
            }
            let _ = format!("{e:?}");
        }
    }
});
