#!/usr/bin/env python3
"""Minimal WHIP server on aiohttp + aiortc (RFC 9725), for interop tests of a WHIP client.

  POST   /whip        application/sdp offer (the publisher's, sendonly) -> 201, Location
                      /whip/<id>, application/sdp answer with aiortc's candidates (all of them:
                      aiortc gathers before it answers) and a=end-of-candidates
  PATCH  /whip/<id>   application/trickle-ice-sdpfrag -> 204; the candidates are added, an ICE
                      restart (new ice-ufrag/pwd) is refused with 422 as RFC 9725 says for a
                      server that does trickle but no restarts
  DELETE /whip/<id>   -> 200, the peer connection is closed
  GET    /stats       -> JSON: sessions (live), posts, deletes, patches, video_frames,
                      audio_frames (decoded, totals over every session), width, height (of the
                      last decoded video frame), codecs, per-session figures (session_list,
                      last_session = the newest), a summary of the last offer

With --token, POST, PATCH and DELETE need 'Authorization: Bearer TOKEN' (401 otherwise).
A publisher that reconnects just POSTs again: each POST is a new session; an old one whose
peer vanished ends when aiortc's ICE consent checks fail (about 30 s) or on its DELETE.

stdout: first line {"listening": PORT}, flushed at once. Status lines (the /stats JSON) go
every --status-interval seconds to --status-stream, stderr by default: a test that reads only
the first stdout line and leaves the pipe unread must not block the server once it fills.
"""

import argparse
import asyncio
import json
import socket
import sys
import time
import uuid

import aiortc
from aiohttp import web
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from aiortc.sdp import candidate_from_sdp

sys.dont_write_bytecode = True  # no __pycache__ in the source tree from the next import
import interop_common as ic  # noqa: E402

CODEC_MIME = {"h264": "video/h264", "vp8": "video/vp8"}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 (default) picks a free port")
    p.add_argument("--token", help="require 'Authorization: Bearer TOKEN'")
    p.add_argument("--video-codec", choices=["any", *sorted(CODEC_MIME)], default="any",
                   help="accept only this video codec in the answer (default: any aiortc has)")
    p.add_argument("--ice-addr", action="append",
                   help="address to gather host candidates on (repeatable); default: --host; "
                        "'all' = aioice's own choice (every interface but loopback)")
    p.add_argument("--status-interval", type=float, default=1.0,
                   help="seconds between status lines, 0 = none (default 1)")
    p.add_argument("--status-stream", choices=["stderr", "stdout"], default="stderr")
    p.add_argument("--verbose", action="store_true", help="aiortc's debug logs on stderr")
    args = p.parse_args(argv)
    if not args.ice_addr:
        args.ice_addr = ["all"] if args.host in ("0.0.0.0", "::", "") else [args.host]
    return args


class WhipSession:
    def __init__(self, sid, pc):
        self.id = sid
        self.pc = pc
        self.created = time.monotonic()
        self.video_frames = 0
        self.audio_frames = 0
        self.width = None
        self.height = None
        self.video_codec = None
        self.audio_codec = None
        self.first_frame_s = None
        self.state = "new"
        self.deleted = False
        self.failed = False  # ICE/DTLS failed, e.g. consent lost after the peer vanished
        self.remote_ufrag = None
        self.tasks = []

    @property
    def live(self):
        return not self.deleted and self.state not in ("failed", "closed")

    def figures(self):
        return {
            "id": self.id, "state": self.state, "deleted": self.deleted, "failed": self.failed,
            "video_frames": self.video_frames, "audio_frames": self.audio_frames,
            "width": self.width, "height": self.height, "video_codec": self.video_codec,
            "audio_codec": self.audio_codec, "first_frame_s": self.first_frame_s,
            "age_s": round(time.monotonic() - self.created, 3),
        }


class WhipServer:
    def __init__(self, args, counter):
        self.args = args
        self.counter = counter
        self.sessions = {}
        self.posts = 0
        self.deletes = 0
        self.patches = 0
        self.trickled_candidates = 0
        self.video_frames = 0
        self.audio_frames = 0
        self.width = None
        self.height = None
        self.video_codec = None
        self.audio_codec = None
        self.last_offer = None
        self.rejected = {}

    # --- helpers ---------------------------------------------------------------------------

    def refuse(self, status, text):
        self.rejected[str(status)] = self.rejected.get(str(status), 0) + 1
        return web.Response(status=status, text=text + "\n")

    def authorized(self, request):
        return not self.args.token or request.headers.get("Authorization") == f"Bearer {self.args.token}"

    def stats(self):
        return {
            "sessions": sum(1 for s in self.sessions.values() if s.live),
            "sessions_connected": sum(1 for s in self.sessions.values() if s.live and s.state == "connected"),
            "sessions_total": len(self.sessions),
            "posts": self.posts, "deletes": self.deletes, "patches": self.patches,
            "trickled_candidates": self.trickled_candidates,
            "rejected": self.rejected,
            "video_frames": self.video_frames, "audio_frames": self.audio_frames,
            "width": self.width, "height": self.height,
            "video_codec": self.video_codec, "audio_codec": self.audio_codec,
            "decode_errors": self.counter.decode_errors,
            "unknown_payload_type_packets": self.counter.unknown_payload_type,
            "last_offer": self.last_offer,
            # The newest session: after a publisher reconnects, its figures are the new one's.
            "last_session": (list(self.sessions.values())[-1].figures() if self.sessions else None),
            "session_list": [s.figures() for s in self.sessions.values()],
        }

    async def consume(self, session, track):
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if track.kind == "video":
                session.video_frames += 1
                self.video_frames += 1
                if session.first_frame_s is None:
                    session.first_frame_s = round(time.monotonic() - session.created, 3)
                session.width, session.height = frame.width, frame.height
                self.width, self.height = frame.width, frame.height
            elif track.kind == "audio":
                session.audio_frames += 1
                self.audio_frames += 1

    # --- handlers --------------------------------------------------------------------------

    async def post(self, request):
        self.posts += 1
        if not self.authorized(request):
            return self.refuse(401, "missing or wrong bearer token")
        if request.content_type != "application/sdp":
            return self.refuse(415, f"Content-Type must be application/sdp, not {request.content_type}")
        offer = await request.text()
        summary = ic.sdp_summary(offer)
        self.last_offer = {
            "bundle": summary["bundle"],
            "media": [{k: m.get(k) for k in ("kind", "direction", "mid", "candidates", "end_of_candidates")}
                      | {"codecs": sorted({v.split("/")[0] for v in m["rtpmap"].values()})}
                      for m in summary["media"]],
            "trickle": "a=ice-options:trickle" in offer,
        }
        sid = uuid.uuid4().hex
        pc = RTCPeerConnection(ic.rtc_configuration("balanced"))
        session = WhipSession(sid, pc)
        if self.args.video_codec != "any":
            # Preferences must be on the transceivers before the offer is applied: aiortc picks
            # the answer's codecs in setRemoteDescription.
            video = pc.addTransceiver("video", direction="recvonly")
            caps = RTCRtpReceiver.getCapabilities("video").codecs
            video.setCodecPreferences(
                [c for c in caps if c.mimeType.lower() in (CODEC_MIME[self.args.video_codec], "video/rtx")])
            pc.addTransceiver("audio", direction="recvonly")

        @pc.on("track")
        def on_track(track):
            session.tasks.append(asyncio.ensure_future(self.consume(session, track)))

        @pc.on("connectionstatechange")
        def on_state():
            session.state = pc.connectionState
            if pc.connectionState == "failed":
                session.failed = True
                asyncio.ensure_future(pc.close())

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
            # aiortc gathers every candidate here, so the answer is complete.
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:
            await pc.close()
            return self.refuse(400, f"aiortc rejected the offer: {type(exc).__name__}: {exc}")
        answer = pc.localDescription.sdp
        for m in ic.sdp_summary(answer)["media"]:
            if m["port"] != 0 and m["codec"]:
                setattr(session, f"{m['kind']}_codec", m["codec"])
                setattr(self, f"{m['kind']}_codec", m["codec"])
        session.remote_ufrag = next((l.strip()[len("a=ice-ufrag:"):] for l in offer.splitlines()
                                     if l.startswith("a=ice-ufrag:")), None)
        self.sessions[sid] = session
        return web.Response(
            status=201, body=answer.encode(),
            headers={"Location": f"/whip/{sid}", "Content-Type": "application/sdp",
                     "ETag": f'"{sid}"',
                     # RFC 9725 4.3.1: a resource that takes trickled candidates says so.
                     "Accept-Patch": "application/trickle-ice-sdpfrag"})

    async def patch(self, request):
        self.patches += 1
        if not self.authorized(request):
            return self.refuse(401, "missing or wrong bearer token")
        session = self.sessions.get(request.match_info["sid"])
        if session is None or session.deleted:
            return self.refuse(404, "no such session")
        if request.content_type != "application/trickle-ice-sdpfrag":
            return self.refuse(415, "Content-Type must be application/trickle-ice-sdpfrag")
        frag = await request.text()
        ufrag = next((l.strip()[len("a=ice-ufrag:"):] for l in frag.splitlines()
                      if l.startswith("a=ice-ufrag:")), None)
        if ufrag and session.remote_ufrag and ufrag != session.remote_ufrag:
            return self.refuse(422, "ICE restarts are not supported")
        mid = None
        try:
            for raw in frag.splitlines():
                line = raw.strip()
                if line.startswith("a=mid:"):
                    mid = line[len("a=mid:"):]
                elif line.startswith("a=candidate:"):
                    cand = candidate_from_sdp(line[len("a=candidate:"):])
                    cand.sdpMid = mid if mid is not None else "0"
                    await session.pc.addIceCandidate(cand)
                    self.trickled_candidates += 1
                elif line == "a=end-of-candidates":
                    await session.pc.addIceCandidate(None)
        except Exception as exc:
            return self.refuse(400, f"bad sdpfrag: {type(exc).__name__}: {exc}")
        return web.Response(status=204)

    async def delete(self, request):
        if not self.authorized(request):
            return self.refuse(401, "missing or wrong bearer token")
        session = self.sessions.get(request.match_info["sid"])
        if session is None or session.deleted:
            return self.refuse(404, "no such session")
        session.deleted = True
        self.deletes += 1
        await session.pc.close()
        for t in session.tasks:
            t.cancel()
        return web.Response(status=200)

    async def get_stats(self, request):
        return web.json_response(self.stats())

    async def status_loop(self, stream):
        while True:
            await asyncio.sleep(self.args.status_interval)
            stream.write(json.dumps({"status": self.stats()}) + "\n")
            stream.flush()

    async def shutdown(self):
        for s in self.sessions.values():
            await s.pc.close()


async def serve(args, counter):
    server = WhipServer(args, counter)
    app = web.Application()
    app.router.add_post("/whip", server.post)
    app.router.add_patch("/whip/{sid}", server.patch)
    app.router.add_delete("/whip/{sid}", server.delete)
    app.router.add_get("/stats", server.get_stats)

    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    port = sock.getsockname()[1]
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    ic.emit({"listening": port, "tool": "whip_server", "aiortc": aiortc.__version__})

    status = None
    if args.status_interval > 0:
        stream = sys.stdout if args.status_stream == "stdout" else sys.stderr
        status = asyncio.ensure_future(server.status_loop(stream))
    try:
        await asyncio.Event().wait()  # until SIGINT/SIGTERM
    finally:
        if status:
            status.cancel()
        await server.shutdown()
        await runner.cleanup()


def main(argv):
    args = parse_args(argv)
    ic.setup_logging(args.verbose)
    counter = ic.install_receiver_log_counter(args.verbose)
    ic.restrict_host_candidates(args.ice_addr)
    import signal

    loop = asyncio.new_event_loop()
    task = loop.create_task(serve(args, counter))
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        loop.run_until_complete(task)
    except asyncio.CancelledError:
        pass
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
