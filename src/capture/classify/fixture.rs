//! The parser of the V4L2 node fixtures (`tests/fixtures/v4l2-nodes/`, format in its
//! README.md), shared by the tests of `classify.rs` and of `peercam doctor`.

use super::NodeInfo;

/// Parses a fixture in the format of tests/fixtures/v4l2-nodes/README.md.
pub(crate) fn parse_fixture(text: &str) -> Result<Vec<NodeInfo>, String> {
    let mut nodes: Vec<NodeInfo> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        if key == "node" {
            nodes.push(NodeInfo {
                path: value.to_owned(),
                driver: String::new(),
                card: String::new(),
                bus_info: String::new(),
                device_caps: 0,
                formats: Vec::new(),
            });
            continue;
        }
        let node = nodes
            .last_mut()
            .ok_or_else(|| format!("line {}: `{key}` before the first `node`", n + 1))?;
        match key {
            "driver" => node.driver = value.to_owned(),
            "card" => node.card = value.to_owned(),
            "bus_info" => node.bus_info = value.to_owned(),
            "device_caps" => {
                let hex = value.trim().trim_start_matches("0x");
                node.device_caps = u32::from_str_radix(hex, 16)
                    .map_err(|e| format!("line {}: device_caps {value:?}: {e}", n + 1))?;
            }
            "formats" => node.formats = value.split_whitespace().map(str::to_owned).collect(),
            "source" => {}
            other => return Err(format!("line {}: unknown key `{other}`", n + 1)),
        }
    }
    for node in &nodes {
        if node.driver.is_empty() || node.device_caps == 0 {
            return Err(format!("{}: no driver or device_caps", node.path));
        }
    }
    Ok(nodes)
}

/// The nodes of `tests/fixtures/v4l2-nodes/{name}.txt` (panics when it does not parse).
pub(crate) fn fixture(name: &str) -> Vec<NodeInfo> {
    let path = format!(
        "{}/tests/fixtures/v4l2-nodes/{name}.txt",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    parse_fixture(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}
