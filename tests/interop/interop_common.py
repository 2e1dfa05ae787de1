"""Shared helpers of the aiortc interop tools (whep_client.py, whip_server.py).

Kept free of anything peercam-specific: these tools stand in for an independent WebRTC stack.
"""

import json
import logging
import re
import sys

import aioice.ice
from aiortc import RTCBundlePolicy, RTCConfiguration

BUNDLE_POLICIES = {
    "balanced": RTCBundlePolicy.BALANCED,
    "max-bundle": RTCBundlePolicy.MAX_BUNDLE,
    "max-compat": RTCBundlePolicy.MAX_COMPAT,
}


def restrict_host_candidates(addrs):
    """Make aioice gather host candidates on ADDRS only (a list of IP strings).

    aioice's own choice is every address of every interface *except* 127.0.0.1 and ::1, so
    on a test machine it would advertise e.g. the eth0 address, and in a network namespace
    that has only `lo` it would gather nothing at all. `["all"]` keeps aioice's choice.
    """
    if addrs == ["all"]:
        return
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: list(addrs)


def rtc_configuration(bundle_policy):
    # iceServers=[] matters: with None aiortc falls back to a public STUN server.
    return RTCConfiguration(iceServers=[], bundlePolicy=BUNDLE_POLICIES[bundle_policy])


def emit(obj):
    """One JSON line on stdout, flushed at once (the tests read stdout line by line)."""
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


class ReceiverLogCounter(logging.Handler):
    """Counts what aiortc's RTP receiver only logs: frames the decoder rejected, and RTP
    packets dropped for a payload type that was not negotiated (silently, at debug level)."""

    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.decode_errors = 0
        self.unknown_payload_type = 0
        self.last_decode_error = None

    def emit(self, record):
        msg = record.getMessage()
        if "failed to decode" in msg:
            self.decode_errors += 1
            self.last_decode_error = msg
        elif "unknown payload type" in msg:
            self.unknown_payload_type += 1


def install_receiver_log_counter(verbose):
    counter = ReceiverLogCounter()
    log = logging.getLogger("aiortc.rtcrtpreceiver")
    log.addHandler(counter)
    log.setLevel(logging.DEBUG)
    if not verbose:
        # The counter sees the records; nothing is printed unless --verbose.
        log.propagate = False
    return counter


def setup_logging(verbose):
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )


def sdp_summary(sdp):
    """What an SDP says that matters for these tests: per m-line its kind, direction, mid,
    the first (chosen) codec with its fmtp, the candidates and end-of-candidates."""
    media = []
    session_lines = []
    current = None
    for raw in sdp.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            parts = line[2:].split()
            current = {
                "kind": parts[0],
                "port": int(parts[1]) if parts[1].isdigit() else parts[1],
                "payload_types": parts[3:],
                "direction": None,
                "mid": None,
                "rtpmap": {},
                "fmtp": {},
                "candidates": 0,
                "end_of_candidates": False,
            }
            media.append(current)
            continue
        if current is None:
            session_lines.append(line)
            continue
        if line in ("a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive"):
            current["direction"] = line[2:]
        elif line.startswith("a=mid:"):
            current["mid"] = line[6:]
        elif line.startswith("a=rtpmap:"):
            m = re.match(r"a=rtpmap:(\d+) (.+)", line)
            if m:
                current["rtpmap"][m.group(1)] = m.group(2)
        elif line.startswith("a=fmtp:"):
            m = re.match(r"a=fmtp:(\d+) (.+)", line)
            if m:
                current["fmtp"][m.group(1)] = m.group(2)
        elif line.startswith("a=candidate:"):
            current["candidates"] += 1
        elif line == "a=end-of-candidates":
            current["end_of_candidates"] = True
    for m in media:
        chosen = None
        for pt in m["payload_types"]:
            enc = m["rtpmap"].get(pt, "")
            if enc and not enc.lower().startswith(("rtx/", "red/", "ulpfec/", "flexfec")):
                chosen = pt
                break
        if chosen is not None:
            name = m["rtpmap"][chosen].split("/")[0]
            m["codec"] = f"{m['kind']}/{name}"
            m["codec_pt"] = int(chosen)
            m["codec_fmtp"] = m["fmtp"].get(chosen)
        else:
            m["codec"] = None
    return {
        "ice_lite": "a=ice-lite" in session_lines,
        "bundle": next((l[len("a=group:BUNDLE"):].split() for l in session_lines
                        if l.startswith("a=group:BUNDLE")), None),
        "session_candidates": sum(1 for l in session_lines if l.startswith("a=candidate:")),
        "media": media,
    }
