#!/usr/bin/env python3
"""WHEP client on aiortc (draft-ietf-wish-whep), for interop tests of a WHEP server.

POSTs a recvonly video+audio offer, expects 201 + Location + an SDP answer that carries the
server's candidates (no trickle from the server), decodes at least --frames video frames and
some Opus audio frames, then DELETEs the session (expects 200).

stdout: exactly one JSON line with the figures, `"ok": true|false`, and `"error"` when not ok.
stderr: the reason of a failure in plain words, and aiortc's logs with --verbose.
Exit status: 0 everything held, 1 a check failed (HTTP status, answer, timeout, frame size,
codec, DELETE), 2 bad arguments, 3 the codec asked for is not in this aiortc.
"""

import argparse
import asyncio
import sys
import time
import urllib.parse

import aiohttp
import aiortc
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

sys.dont_write_bytecode = True  # no __pycache__ in the source tree from the next import
import interop_common as ic  # noqa: E402

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_NO_CODEC = 0, 1, 2, 3
CODEC_MIME = {"h264": "video/h264", "av1": "video/av1"}


class Failure(Exception):
    pass


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True, help="the WHEP endpoint, e.g. http://127.0.0.1:7000/whep")
    p.add_argument("--token", help="sent as 'Authorization: Bearer TOKEN' on POST and DELETE")
    p.add_argument("--codec", choices=sorted(CODEC_MIME), default="h264",
                   help="the only video codec offered (setCodecPreferences); default h264")
    p.add_argument("--frames", type=int, default=60, help="video frames to decode (default 60)")
    p.add_argument("--min-audio-frames", type=int, default=10,
                   help="decoded audio frames needed (default 10, i.e. 200 ms of Opus)")
    p.add_argument("--width", type=int, help="expected decoded width (every frame)")
    p.add_argument("--height", type=int, help="expected decoded height (every frame)")
    p.add_argument("--timeout", type=float, default=20.0,
                   help="seconds for the whole exchange, POST to DELETE (default 20)")
    p.add_argument("--ice-addr", action="append",
                   help="address to gather host candidates on (repeatable); default 127.0.0.1; "
                        "'all' = aioice's own choice (every interface but loopback)")
    p.add_argument("--bundle-policy", choices=sorted(ic.BUNDLE_POLICIES), default="max-bundle",
                   help="max-bundle (default): one ICE transport for both m-lines, as browsers "
                        "do; balanced (aiortc's default): one per m-line until the answer")
    p.add_argument("--no-delete", action="store_true",
                   help="leave without DELETE (a client that vanishes); delete_status is null")
    p.add_argument("--verbose", action="store_true", help="aiortc's debug logs on stderr")
    args = p.parse_args(argv)
    if (args.width is None) != (args.height is None):
        p.error("--width and --height go together")
    if args.frames < 1:
        p.error("--frames must be at least 1")
    args.ice_addr = args.ice_addr or ["127.0.0.1"]
    return args


def codec_preferences(kind, mime):
    """The receiver capabilities of MIME (all its variants, e.g. both H.264 profiles) plus
    RTX, or None when this aiortc has no such codec."""
    caps = RTCRtpReceiver.getCapabilities(kind).codecs
    chosen = [c for c in caps if c.mimeType.lower() == mime]
    if not chosen:
        return None
    return chosen + [c for c in caps if c.mimeType.lower() == f"{kind}/rtx"]


class Session:
    def __init__(self, args, result):
        self.args = args
        self.r = result
        self.t0 = time.monotonic()
        self.enough = asyncio.Event()
        self.failure = None
        self.tasks = []
        self.closing = False

    def since(self):
        return round(time.monotonic() - self.t0, 3)

    def check_enough(self):
        if (self.r["video_frames"] >= self.args.frames
                and self.r["audio_frames"] >= self.args.min_audio_frames):
            self.enough.set()

    def fail_soon(self, reason):
        if self.failure is None:
            self.failure = reason
        self.enough.set()

    async def consume(self, track):
        kind = track.kind
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if kind == "video":
                self.r["video_frames"] += 1
                if self.r["first_frame_s"] is None:
                    self.r["first_frame_s"] = self.since()
                size = (frame.width, frame.height)
                self.r["width"], self.r["height"] = size
                if self.args.width is not None and size != (self.args.width, self.args.height):
                    self.r["size_mismatches"] += 1
                    if self.r["first_bad_size"] is None:
                        self.r["first_bad_size"] = f"{size[0]}x{size[1]}"
            elif kind == "audio":
                self.r["audio_frames"] += 1
                if self.r["first_audio_s"] is None:
                    self.r["first_audio_s"] = self.since()
                    self.r["audio_sample_rate"] = frame.sample_rate
            self.check_enough()


async def run(args, r, counter):
    s = Session(args, r)
    pc = RTCPeerConnection(ic.rtc_configuration(args.bundle_policy))
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=args.timeout))
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    location = None
    try:
        video = pc.addTransceiver("video", direction="recvonly")
        audio = pc.addTransceiver("audio", direction="recvonly")
        video.setCodecPreferences(codec_preferences("video", CODEC_MIME[args.codec]))
        audio.setCodecPreferences(codec_preferences("audio", "audio/opus"))

        @pc.on("track")
        def on_track(track):
            s.tasks.append(asyncio.ensure_future(s.consume(track)))

        @pc.on("connectionstatechange")
        def on_state():
            if not s.closing:
                r["connection_state"] = pc.connectionState
            if pc.connectionState == "connected" and r["connected_s"] is None:
                r["connected_s"] = s.since()
            elif pc.connectionState == "failed":
                s.fail_soon("the peer connection failed (ICE or DTLS)")

        # aiortc gathers every candidate inside setLocalDescription: the offer is complete.
        await pc.setLocalDescription(await pc.createOffer())
        r["offer_s"] = s.since()

        async with http.post(args.url, data=pc.localDescription.sdp.encode(),
                             headers={**headers, "Content-Type": "application/sdp"}) as resp:
            body = await resp.text(errors="replace")
            r["http_status"] = resp.status
            r["post_s"] = s.since()
            if resp.status != 201:
                r["body"] = body[:2000]
                raise Failure(f"POST {args.url} answered {resp.status} (expected 201): {body[:500]!r}")
            ctype = resp.headers.get("Content-Type", "")
            if ctype.split(";")[0].strip().lower() != "application/sdp":
                raise Failure(f"POST answered 201 with Content-Type {ctype!r}, not application/sdp")
            loc = resp.headers.get("Location")
            if not loc:
                raise Failure("POST answered 201 without a Location header")
            # WHEP: a relative Location is resolved against the URL the request went to.
            location = urllib.parse.urljoin(str(resp.url), loc)
            r["location"] = location
            r["location_header"] = loc
            r["etag"] = resp.headers.get("ETag")
            answer = body

        summary = ic.sdp_summary(answer)
        kinds = {m["kind"]: m for m in summary["media"]}
        r["ice_lite"] = summary["ice_lite"]
        r["answer_bundle"] = summary["bundle"]
        r["answer_candidates"] = summary["session_candidates"] + sum(m["candidates"] for m in summary["media"])
        r["answer_end_of_candidates"] = all(m["end_of_candidates"] for m in summary["media"] if m["port"] != 0)
        for kind in ("video", "audio"):
            m = kinds.get(kind)
            needed = kind == "video" or args.min_audio_frames > 0
            if m is None or m["port"] == 0 or m["codec"] is None:
                if needed:
                    raise Failure(f"the answer has no {kind} (m-line missing or rejected)")
                continue
            r[f"{kind}_codec"] = m["codec"]
            r[f"{kind}_fmtp"] = m["codec_fmtp"]
            r[f"{kind}_direction"] = m["direction"]
            if needed and m["direction"] not in (None, "sendonly", "sendrecv"):
                raise Failure(f"the answer's {kind} is {m['direction']}: the server sends no {kind}")
        if r["answer_candidates"] == 0:
            raise Failure("the answer carries no a=candidate: WHEP servers do not trickle to "
                          "the client, so the answer must hold them")
        if r["video_codec"].lower() != CODEC_MIME[args.codec]:
            raise Failure(f"the answer chose {r['video_codec']}, only {CODEC_MIME[args.codec]} was offered")
        if r["audio_codec"] and r["audio_codec"].lower() != "audio/opus":
            raise Failure(f"the answer chose {r['audio_codec']}, only audio/opus was offered")

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        except Exception as exc:  # aiortc raises ValueError and friends on an answer it rejects
            raise Failure(f"aiortc rejected the answer: {type(exc).__name__}: {exc}") from exc

        remaining = args.timeout - (time.monotonic() - s.t0)
        try:
            await asyncio.wait_for(s.enough.wait(), max(remaining, 0.01))
        except asyncio.TimeoutError:
            raise Failure(
                f"timeout after {args.timeout:g} s: {r['video_frames']}/{args.frames} video "
                f"frames, {r['audio_frames']}/{args.min_audio_frames} audio frames decoded, "
                f"connection {pc.connectionState}, ICE {pc.iceConnectionState}"
                + ("" if r["answer_end_of_candidates"] else
                   " (the answer has no a=end-of-candidates, so aiortc never gives up on ICE)")
            ) from None
        if s.failure:
            raise Failure(s.failure)
        r["frames_s"] = s.since()
    finally:
        s.closing = True
        r["decode_errors"] = counter.decode_errors
        r["unknown_payload_type_packets"] = counter.unknown_payload_type
        if location and not args.no_delete:
            try:
                async with http.delete(location, headers=headers,
                                       timeout=aiohttp.ClientTimeout(total=5)) as resp:
                    r["delete_status"] = resp.status
                    if resp.status != 200:
                        r["delete_body"] = (await resp.text(errors="replace"))[:2000]
            except Exception as exc:
                r["delete_error"] = f"{type(exc).__name__}: {exc}"
        for t in s.tasks:
            t.cancel()
        try:
            await asyncio.wait_for(pc.close(), 5)
        except asyncio.TimeoutError:
            r["close_timeout"] = True
        await http.close()

    if r["size_mismatches"]:
        raise Failure(f"{r['size_mismatches']} of {r['video_frames']} frames were not "
                      f"{args.width}x{args.height} (first: {r['first_bad_size']})")
    if not args.no_delete and r["delete_status"] != 200:
        raise Failure(f"DELETE {location} answered {r['delete_status']} (expected 200)"
                      + (f": {r.get('delete_body', '')[:500]!r}" if "delete_body" in r else "")
                      + (f" ({r['delete_error']})" if "delete_error" in r else ""))


def main(argv):
    args = parse_args(argv)
    ic.setup_logging(args.verbose)
    counter = ic.install_receiver_log_counter(args.verbose)
    ic.restrict_host_candidates(args.ice_addr)
    r = {
        "ok": False, "tool": "whep_client", "aiortc": aiortc.__version__, "url": args.url,
        "codec": args.codec, "video_frames": 0, "audio_frames": 0, "width": None, "height": None,
        "size_mismatches": 0, "first_bad_size": None, "first_frame_s": None,
        "first_audio_s": None, "connected_s": None, "http_status": None, "location": None,
        "delete_status": None, "video_codec": None, "audio_codec": None,
    }
    if codec_preferences("video", CODEC_MIME[args.codec]) is None:
        have = sorted({c.mimeType for c in RTCRtpReceiver.getCapabilities("video").codecs})
        r["error"] = (f"aiortc {aiortc.__version__} has no {CODEC_MIME[args.codec]} "
                      f"(its video codecs: {', '.join(have)})")
        ic.emit(r)
        print(f"whep_client: {r['error']}", file=sys.stderr)
        return EXIT_NO_CODEC
    t0 = time.monotonic()
    try:
        asyncio.run(run(args, r, counter))
        r["ok"] = True
    except Failure as exc:
        r["error"] = str(exc)
    except aiohttp.ClientError as exc:
        r["error"] = f"HTTP: {type(exc).__name__}: {exc}"
    except asyncio.TimeoutError:
        r["error"] = f"HTTP request timed out (--timeout {args.timeout:g})"
    r["elapsed_s"] = round(time.monotonic() - t0, 3)
    ic.emit(r)
    if not r["ok"]:
        print(f"whep_client: FAILED: {r['error']}", file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
