#!/usr/bin/env python3
"""Time from exec to READY=1 of peercam with the test sources: this script plays systemd's
notification socket (NOTIFY_SOCKET). Usage: scripts/bench-ready.py BINARY [RUNS]"""
import os, socket, subprocess, sys, tempfile, time

binary = sys.argv[1]
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
d = tempfile.mkdtemp()
cfg = os.path.join(d, 'c.toml')
with open(cfg, 'w') as f:
    f.write('[server]\nlisten="127.0.0.1:0"\n[video]\nsource="test"\n[audio]\nsource="test"\n')
for i in range(runs):
    path = os.path.join(d, f'notify{i}.sock')
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(10)
    env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC='10000000')
    env.pop('JOURNAL_STREAM', None)
    t0 = time.monotonic()
    child = subprocess.Popen([binary, '--config', cfg], env=env, stderr=subprocess.DEVNULL)
    while 'READY=1' not in s.recv(4096).decode():
        pass
    print('READY after %.1f ms' % ((time.monotonic() - t0) * 1000))
    child.terminate()
    child.wait()
