// The network the NAT tests (nat.test.mjs) run in, built from network namespaces, veth pairs
// and iptables, and deleted by `close()`. Needs root.
//
//   home (192.168.1.10, peercam) ── home router ──┐
//        port-restricted cone NAT: 203.0.113.2     │  internet (203.0.113.0/24, a bridge):
//                                                  ├─ 203.0.113.1: coturn, peercam relay
//   mobile (10.0.0.10, Chromium) ── mobile router ─┘
//        symmetric NAT (--random-fully): 203.0.113.3
//
// The home router is Linux's MASQUERADE: it keeps a mapping's port for every destination
// (endpoint-independent mapping) and lets in only replies from where a packet went
// (address- and port-dependent filtering): a port-restricted cone. The mobile router's
// `--random-fully` gives each destination its own port: a symmetric NAT, which no hole
// punching gets through from a port-restricted cone. Nothing in these namespaces reaches
// the test's own network or the machine's.

import { execFileSync, spawn } from 'node:child_process';

const run = (cmd, ...args) => execFileSync(cmd, args, { stdio: 'pipe' }).toString();

/** The addresses of the network. */
export const ADDR = {
  internet: '203.0.113.1',
  homeWan: '203.0.113.2',
  mobileWan: '203.0.113.3',
  home: '192.168.1.10',
  mobile: '10.0.0.10',
};

export class Network {
  constructor() {
    const id = `${process.pid % 100000}`;
    this.id = id;
    this.ns = {
      internet: `pcn-i${id}`,
      homeRouter: `pcn-hr${id}`,
      home: `pcn-h${id}`,
      mobileRouter: `pcn-mr${id}`,
      mobile: `pcn-m${id}`,
    };
    this.children = [];
  }

  /** Builds the namespaces, links, addresses, routes and NATs. */
  up() {
    const { ns, id } = this;
    for (const name of Object.values(ns)) run('ip', 'netns', 'add', name);
    const ip = (name, ...args) => run('ip', '-n', name, ...args);
    const veth = (a, nsA, b, nsB) => {
      run('ip', 'link', 'add', a, 'type', 'veth', 'peer', 'name', b);
      run('ip', 'link', 'set', a, 'netns', nsA);
      run('ip', 'link', 'set', b, 'netns', nsB);
    };
    ip(ns.internet, 'link', 'add', 'br0', 'type', 'bridge');
    veth(`hrw${id}`, ns.homeRouter, `ihr${id}`, ns.internet);
    veth(`mrw${id}`, ns.mobileRouter, `imr${id}`, ns.internet);
    veth(`hrl${id}`, ns.homeRouter, `hd${id}`, ns.home);
    veth(`mrl${id}`, ns.mobileRouter, `md${id}`, ns.mobile);
    for (const dev of [`ihr${id}`, `imr${id}`]) ip(ns.internet, 'link', 'set', dev, 'master', 'br0');
    const addresses = [
      [ns.internet, 'br0', `${ADDR.internet}/24`],
      [ns.homeRouter, `hrw${id}`, `${ADDR.homeWan}/24`],
      [ns.homeRouter, `hrl${id}`, '192.168.1.1/24'],
      [ns.home, `hd${id}`, `${ADDR.home}/24`],
      [ns.mobileRouter, `mrw${id}`, `${ADDR.mobileWan}/24`],
      [ns.mobileRouter, `mrl${id}`, '10.0.0.1/24'],
      [ns.mobile, `md${id}`, `${ADDR.mobile}/24`],
    ];
    for (const [name, dev, addr] of addresses) ip(name, 'addr', 'add', addr, 'dev', dev);
    for (const name of Object.values(ns)) ip(name, 'link', 'set', 'lo', 'up');
    for (const [name, dev] of [[ns.internet, 'br0'], [ns.internet, `ihr${id}`],
      [ns.internet, `imr${id}`], ...addresses.slice(1).map(([n, d]) => [n, d])]) {
      ip(name, 'link', 'set', dev, 'up');
    }
    // Like a host on the internet, the internet namespace sends what it has no route for
    // somewhere (a veth pair where it vanishes) rather than failing the send: coturn
    // drops a TCP client whose Send indication names an unroutable peer (a viewer's
    // candidate with a private address) when sendto() fails with ENETUNREACH.
    veth('void0', ns.internet, 'void1', ns.internet);
    ip(ns.internet, 'link', 'set', 'void0', 'up');
    ip(ns.internet, 'link', 'set', 'void1', 'up');
    ip(ns.internet, 'route', 'add', 'default', 'dev', 'void0');
    for (const router of [ns.homeRouter, ns.mobileRouter]) {
      ip(router, 'route', 'add', 'default', 'via', ADDR.internet);
    }
    ip(ns.home, 'route', 'add', 'default', 'via', '192.168.1.1');
    ip(ns.mobile, 'route', 'add', 'default', 'via', '10.0.0.1');
    for (const router of [ns.homeRouter, ns.mobileRouter]) {
      run('ip', 'netns', 'exec', router, 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=1');
    }
    this.iptables(ns.homeRouter, '-t', 'nat', '-A', 'POSTROUTING', '-o', `hrw${id}`,
      '-j', 'MASQUERADE');
    this.iptables(ns.mobileRouter, '-t', 'nat', '-A', 'POSTROUTING', '-o', `mrw${id}`,
      '-j', 'MASQUERADE', '--random-fully');
    return this;
  }

  iptables(name, ...args) {
    run('ip', 'netns', 'exec', name, 'iptables', '-w', ...args);
  }

  /** The home router forwards `proto` port `port` of its public address to peercam. */
  forward(proto, port) {
    this.iptables(this.ns.homeRouter, '-t', 'nat', '-A', 'PREROUTING', '-i', `hrw${this.id}`,
      '-p', proto, '--dport', `${port}`, '-j', 'DNAT', '--to-destination', `${ADDR.home}:${port}`);
  }

  /** The home router's forwards removed (the NATs stay). */
  clearForwards() {
    this.iptables(this.ns.homeRouter, '-t', 'nat', '-F', 'PREROUTING');
  }

  /** The mobile network drops (`on`) or passes the viewer's UDP to the internet. */
  blockMobileUdp(on) {
    const rule = ['FORWARD', '-i', `mrl${this.id}`, '-p', 'udp', '-j', 'DROP'];
    if (on) this.iptables(this.ns.mobileRouter, '-A', ...rule);
    else this.iptables(this.ns.mobileRouter, '-D', ...rule);
  }

  /** A program started in namespace `name`; stopped by `close()` if still running. */
  spawn(name, argv, options = {}) {
    const child = spawn('ip', ['netns', 'exec', this.ns[name], ...argv],
      { stdio: ['ignore', 'pipe', 'pipe'], ...options });
    child.output = '';
    const keep = (chunk) => {
      child.output += chunk.toString();
      if (child.output.length > 1_000_000) child.output = child.output.slice(-500_000);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    child.exited = new Promise((resolve) => child.once('exit', resolve));
    this.children.push(child);
    return child;
  }

  /** Stops `child` (SIGTERM, then SIGKILL after 3 s) and waits for it. */
  static async stop(child) {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const killer = setTimeout(() => child.kill('SIGKILL'), 3000);
    await child.exited;
    clearTimeout(killer);
  }

  /** Waits until TCP `host:port` accepts a connection from namespace `from`. */
  async waitForTcp(from, host, port, timeoutMs = 10_000) {
    const until = Date.now() + timeoutMs;
    for (;;) {
      try {
        run('ip', 'netns', 'exec', this.ns[from], 'bash', '-c',
          `exec 3<>/dev/tcp/${host}/${port}`);
        return;
      } catch (error) {
        if (Date.now() > until) throw new Error(`${host}:${port} not reachable from ${from}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  /** Stops every program started here and deletes the namespaces (links go with them). */
  async close() {
    await Promise.all(this.children.map((c) => Network.stop(c)));
    for (const name of Object.values(this.ns)) {
      try { run('ip', 'netns', 'del', name); } catch { /* never made, or already gone */ }
    }
  }
}
