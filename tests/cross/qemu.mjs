// Runs a cross-built peercam under qemu-user for the browser tests. tests/browser/helpers.mjs
// starts the binary directly; this starts it through a wrapper command (qemu-aarch64-static
// BIN ...) with the same test config, and reads the daemon's /metrics.

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort, repoRoot, sleep, testConfig } from '../browser/helpers.mjs';

/**
 * The qemu-user command line for a binary of `arch` ("aarch64" or "armv7"). aarch64 runs
 * without -L: the loader and libraries come from the host's multiarch directories
 * (libc6:arm64, libopus0:arm64, ...); with -L /usr/aarch64-linux-gnu it hung in pthread_create.
 * armv7 takes its loader and libc from the cross sysroot.
 */
export function qemuWrapper(arch) {
  switch (arch) {
    case 'aarch64': return ['qemu-aarch64-static'];
    case 'armv7': return ['qemu-arm-static', '-L', '/usr/arm-linux-gnueabihf'];
    default: throw new Error(`no qemu wrapper for ${arch}`);
  }
}

/**
 * Starts `bin` through `wrapper` (argv prefix, may be empty) with the test pattern and tone at
 * `width`x`height`@`fps`, loopback only (the config of tests/browser/helpers.mjs testConfig),
 * and waits until GET / answers. `video`: extra [video] lines (not width/height/fps).
 */
export async function startWrappedDaemon({
  bin, wrapper = [], width = 320, height = 240, fps = 15, video = '', audio = '', env = {},
  readyTimeoutMs = 60_000,
}) {
  if (!existsSync(bin)) throw new Error(`peercam binary not found at ${bin}`);
  const port = await freePort();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'peercam-cross-'));
  const configPath = path.join(dir, 'peercam.toml');
  const base = testConfig({ port, video, audio });
  const config = base.replace('width = 640', `width = ${width}`)
    .replace('height = 480', `height = ${height}`)
    .replace('fps = 30', `fps = ${fps}`);
  if (config === base && !(width === 640 && height === 480 && fps === 30)) {
    throw new Error('testConfig changed: cannot set the frame size');
  }
  writeFileSync(configPath, config);
  const argv = [...wrapper, bin, '--config', configPath, '--listen', `127.0.0.1:${port}`];
  const child = spawn(argv[0], argv.slice(1), {
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info', JOURNAL_STREAM: '', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const log = [];
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk) => {
    for (const line of chunk.split('\n')) if (line) log.push(line);
    if (process.env.PEERCAM_LOG) process.stderr.write(chunk);
  });
  let exited = null;
  child.on('error', (error) => { exited = `spawn ${argv[0]}: ${error.message}`; });
  child.on('exit', (code, signal) => { exited = signal || `exit code ${code}`; });
  const url = `http://127.0.0.1:${port}/`;
  const started = Date.now();
  for (;;) {
    if (exited) {
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`${argv.join(' ')} exited (${exited}) before serving ${url}:\n`
        + log.slice(-20).join('\n'));
    }
    try {
      const response = await fetch(url);
      if (response.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() - started > readyTimeoutMs) {
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`peercam did not serve ${url} within ${readyTimeoutMs} ms:\n`
        + log.slice(-20).join('\n'));
    }
    await sleep(200);
  }
  const startupMs = Date.now() - started;
  // The page is compiled into the binary: a stale cross build would test an old page.
  const served = await (await fetch(url)).text();
  const onDisk = readFileSync(path.join(repoRoot, 'src', 'http', 'assets', 'index.html'), 'utf8');
  if (served !== onDisk) {
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`${bin} serves an older index.html than src/http/assets: rebuild it`);
  }
  return {
    pid: child.pid,
    port,
    url,
    configPath,
    log,
    startupMs,
    /** GET /metrics parsed into { 'name{labels}': number }. */
    async metrics() {
      const text = await (await fetch(`${url}metrics`)).text();
      const values = {};
      for (const line of text.split('\n')) {
        const m = /^(\S+)\s+([0-9.eE+-]+)$/.exec(line);
        if (m) values[m[1]] = Number(m[2]);
      }
      return values;
    },
    async stop() {
      if (!exited) {
        const gone = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await gone;
        clearTimeout(timer);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
