#!/usr/bin/env python3
"""Time from exec to READY=1 of peercam with the test sources, playing systemd's notification
socket (NOTIFY_SOCKET). Benchmark, not a test.

Usage: benches/ready.py BINARY [RUNS]   (default 5 runs; prints each and the median)"""
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

if len(sys.argv) < 2:
    sys.exit(__doc__)
binary = sys.argv[1]
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
d = tempfile.mkdtemp()
cfg = os.path.join(d, 'c.toml')
with open(cfg, 'w') as f:
    f.write('[server]\nlisten="127.0.0.1:0"\n[video]\nsource="test"\n[audio]\nsource="test"\n')
times = []
for i in range(runs):
    path = os.path.join(d, f'notify{i}.sock')
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(10)
    env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC='10000000')
    env.pop('JOURNAL_STREAM', None)
    t0 = time.monotonic()
    child = subprocess.Popen([binary, '--config', cfg], env=env, stderr=subprocess.DEVNULL)
    try:
        while 'READY=1' not in s.recv(4096).decode():
            pass
    except socket.timeout:
        sys.exit('no READY=1 within 10 s')
    finally:
        elapsed = (time.monotonic() - t0) * 1000
        child.terminate()
        child.wait()
        s.close()
    times.append(elapsed)
    print('READY after %.1f ms' % elapsed)
print('start to READY: median %.1f ms, min %.1f ms, max %.1f ms over %d runs'
      % (statistics.median(times), min(times), max(times), runs))
