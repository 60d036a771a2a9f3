// The web app in a real browser: Playwright (playwright-core, no browser
// download) driving Debian's chromium, headless. Upload an example photo,
// see the quality verdict and the report, ask a follow-up (streamed), record
// a review, find the case in the list, switch to Japanese. Any console
// error (a CSP violation included) fails the test. Run by tests/js/run.sh.
import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';

const base = process.env.SKINGPT_URL;
const key = process.env.SKINGPT_KEY;
const example = process.env.SKINGPT_EXAMPLE;
const shot = process.env.SKINGPT_SCREENSHOT;
const browserPath = process.env.SKINGPT_CHROMIUM || '/usr/bin/chromium';

const browser = await chromium.launch({ executablePath: browserPath, headless: true, args: ['--no-sandbox'] });
const errors = [];
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 1500 } });
  page.on('console', (m) => {
    // The first requests meet the API key's 401 before the page asks for the key.
    if (m.type() === 'error' && !/status of 401/.test(m.text())) errors.push(m.text());
  });
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('dialog', async (d) => {
    if (d.type() === 'confirm' || d.type() === 'alert') await d.accept();
  });
  await page.goto(base + '/');
  assert.equal(await page.title(), 'skingpt — local dermatology assistant');

  // The photo: the quality check asks the server, which wants the key first.
  await page.setInputFiles('#file', example);
  await page.waitForSelector('#key-dialog[open]');
  await page.fill('#key-input', key);
  await page.click('#key-dialog button');
  await page.waitForSelector('#quality.ok, #quality.warn');
  console.log('ok - photo quality shown:', (await page.textContent('#quality')).trim().slice(0, 60));

  await page.fill('#age', '63');
  await page.selectOption('#sex', 'female');
  await page.fill('#site', 'left shoulder');
  await page.click('#submit');
  await page.waitForSelector('#view-case:not(.hidden)', { timeout: 120_000 });
  assert.match(await page.textContent('#status'), /Draft — awaiting clinician review/);
  const bars = await page.locator('#diff li').count();
  assert.ok(bars >= 2, 'the differential as bars');
  assert.match(await page.textContent('#diff li .pct >> nth=0'), /%$/);
  assert.match(await page.textContent('#scored-at'), /first answer names|What skin disease/, 'where the scores were read');
  await page.waitForFunction(() => document.querySelector('#case-photo').naturalWidth > 0);
  console.log('ok - report shown with', bars, 'candidates');

  await page.fill('#chat-input', 'Is it dangerous?');
  await page.press('#chat-input', 'Enter');
  await page.waitForFunction(() => {
    const a = document.querySelectorAll('#chat .msg.assistant');
    return a.length === 1 && a[0].textContent !== '…';
  });
  assert.equal(await page.locator('#chat .msg.user').textContent(), 'Is it dangerous?');
  console.log('ok - follow-up answered');

  await page.check('input[name=decision][value=correct]');
  await page.selectOption('#review-dx', 'bcc');
  await page.fill('#review-notes', 'pearly border on dermoscopy');
  await page.fill('#review-name', 'Dr. Playwright');
  await page.click('#review-form button[type=submit]');
  await page.waitForSelector('#status.reviewed');
  assert.match(await page.textContent('#status'), /Reviewed by Dr\. Playwright/);
  console.log('ok - review recorded');
  if (shot) await page.screenshot({ path: shot, fullPage: true });
  const [fhirDownload] = await Promise.all([page.waitForEvent('download'), page.click('#export-fhir')]);
  assert.match(fhirDownload.suggestedFilename(), /\.fhir\.json$/);
  console.log('ok - FHIR export downloaded');

  // The printable report, rendered by the server into a frame (window.print
  // is a no-op in headless chromium); its stylesheet loads under the CSP.
  await page.evaluate(() => { window.print = () => { window.__printed = true; }; });
  await page.click('#print');
  await page.waitForFunction(() => {
    const f = document.querySelector('#print-frame');
    const body = f && f.contentDocument && f.contentDocument.body;
    return !!body && /Dr\. Playwright/.test(body.textContent);
  });
  const printed = await page.frameLocator('#print-frame').locator('h1').textContent();
  assert.match(printed, /Skin consultation report/);
  assert.ok(await page.frameLocator('#print-frame').locator('figure img').count() === 1, 'photo on the printout');
  console.log('ok - printable report rendered');

  await page.click('#nav-cases');
  await page.fill('#search', 'shoulder');
  await page.click('#search-form button');
  await page.waitForFunction(() => document.querySelectorAll('#case-rows tr').length === 1);
  await page.fill('#search', 'no such case anywhere');
  await page.click('#search-form button');
  await page.waitForSelector('#no-cases:not(.hidden)');
  await page.fill('#search', 'pearly');
  await page.click('#search-form button');
  await page.waitForFunction(() => document.querySelectorAll('#case-rows tr').length === 1);
  await page.click('#case-rows tr');
  await page.waitForSelector('#view-case:not(.hidden)');
  console.log('ok - case found in the list and opened');

  await page.click('#lang-ja');
  assert.equal(await page.textContent('#nav-cases'), '症例一覧');
  assert.equal(await page.getAttribute('html', 'lang'), 'ja');
  console.log('ok - Japanese');

  await page.click('#delete');
  await page.waitForSelector('#view-cases:not(.hidden)');
  await page.waitForSelector('#no-cases:not(.hidden)');
  console.log('ok - case deleted');
} finally {
  await browser.close();
}
assert.deepEqual(errors, [], 'no console errors or CSP violations');
console.log('all web checks passed');
