// The page's barcode decoder against frames drawn to the layout in docs/barcode.md
// (no daemon needed): values round-trip at several widths, bad markers or parity are refused.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { launchChromium, repoRoot } from './helpers.mjs';

const assets = path.join(repoRoot, 'src', 'http', 'assets');
let browser;
let page;

before(async () => {
  browser = await launchChromium();
  page = await browser.newPage();
  page.errors = [];
  page.on('pageerror', (error) => page.errors.push(error.message));
  const html = readFileSync(path.join(assets, 'index.html'), 'utf8')
    .replace(/<script[^>]*><\/script>/, '');
  await page.setContent(html);
  await page.addScriptTag({ path: path.join(assets, 'app.js') });
});
after(async () => { await browser?.close(); });

/** Draws a barcode for `value` into a width x height frame and decodes it in the page. */
function roundTrip(width, height, value, tamper = null) {
  return page.evaluate(([w, h, v, how]) => {
    const canvas = document.createElement('canvas');
    canvas.width = w;
    canvas.height = h;
    const ctx = canvas.getContext('2d');
    ctx.fillStyle = 'rgb(90, 160, 40)'; // picture below and beside the strip
    ctx.fillRect(0, 0, w, h);
    const c = Math.floor(w / 40) & ~1;
    const x0 = Math.floor((w - 40 * c) / 2) & ~1;
    ctx.fillStyle = 'rgb(0, 0, 0)';
    ctx.fillRect(0, 0, w, c);
    const bits = [1, 0, 1];
    let ones = 0;
    for (let k = 31; k >= 0; k--) {
      const bit = Math.floor(v / 2 ** k) % 2;
      bits.push(bit);
      ones += bit;
    }
    bits.push(ones % 2, 0, 1, 0, 1);
    if (how === 'parity') bits[35] ^= 1;
    if (how === 'start') bits[1] = 1;
    if (how === 'stop') bits[39] = 0;
    ctx.fillStyle = 'rgb(235, 235, 235)';
    bits.forEach((bit, i) => { if (bit) ctx.fillRect(x0 + i * c, 0, c, c); });
    const area = barcodeArea(w, h);
    return decodeBarcode(ctx.getImageData(area.x, area.y, area.width, area.height));
  }, [width, height, value, tamper]);
}

test('barcode values round-trip at 320, 640 and 1280 pixels', async () => {
  const values = [0, 1, 0x80000000, 0xffffffff, 0x12345678, Date.now() % 2 ** 32];
  for (const [w, h] of [[320, 240], [640, 480], [1280, 720], [650, 480]]) {
    for (const value of values) {
      assert.equal(await roundTrip(w, h, value), value, `${w}x${h} value ${value}`);
    }
  }
  assert.deepEqual(page.errors, []);
});

test('barcodes with a wrong marker or parity are refused', async () => {
  assert.equal(await roundTrip(640, 480, 0x12345678, 'parity'), null);
  assert.equal(await roundTrip(640, 480, 0x12345678, 'start'), null);
  assert.equal(await roundTrip(640, 480, 0x12345678, 'stop'), null);
  assert.equal(await roundTrip(60, 40, 1234), null); // too narrow to carry one
});
