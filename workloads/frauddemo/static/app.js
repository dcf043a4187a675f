// FraudDemo's live dashboard. Reads the REST API once per (re)connection, then follows the
// server-sent events; controls only call the API. Every value from the server is rendered with
// textContent (never as HTML), and photo URLs are built here from checked SHA-256 ids.

const LIST_CAP = 5; // purchases and returns shown per store
const ALERT_CAP = 50; // alerts kept in the feed (grows when older ones are loaded, up to ALERT_CAP_MAX)
const ALERT_CAP_MAX = 250;
const THUMB = 36; // list thumbnails, CSS pixels (fetched at twice the size for sharp screens)
const PHOTO = 88; // comparison photos of the returns
const PURCHASE_PHOTO = 96;
const HIDDEN_CLOSE_MS = 30000; // a hidden tab lets the live stream go after this long
const SILENCE_MS = 10000; // a status event comes every second: silence this long means a dead stream

const $ = (id) => document.getElementById(id);
const SHA = /^[0-9a-f]{64}$/;
const money = new Intl.NumberFormat('en-US', { style: 'currency', currency: 'USD' });
const TONE = {
  approved: 'ok', allow: 'ok', refunded: 'ok', up: 'ok', live: 'ok',
  held: 'warn', review: 'warn', partitioned: 'warn', resyncing: 'warn', starting: 'warn', pending: 'warn',
  refused: 'bad', block: 'bad', blocked: 'bad', down: 'bad', stale: 'bad',
};
const REASONS = {
  unknown_receipt: 'unknown receipt', multiple_returns: 'receipt returned twice', missing_photo: 'no photo',
  replayed_photo: 'replayed photo', photo_mismatch: 'face does not match', photo_rejected: 'unusable photo',
  photo_unsure: 'uncertain face match', terminal_integrity: 'untrusted terminal',
  contested_receipt: 'contested receipt', velocity: 'too many returns',
  high_value_unsure: 'large refund, face match not certain',
  concurrent_returns: 'returned at two stores at once',
};
// What the detector decided, in words (list rows, alerts, notifications): review asks a person, it is
// not a fraud verdict.
const DETECTOR = { allow: 'allowed', review: 'sent to review', block: 'blocked' };
const DETECTOR_SHORT = { allow: 'allowed', review: 'review', block: 'blocked' }; // list rows: narrow
// A hacked till records its own refund as approved without asking its store, with this reason
// (pos.HackedTill): the page names it a hacked till, the data keeps its terminal id.
const HACKED_REASON = 'approved by the terminal';
const MONEY = {
  refunded: 'refunded', held: 'refund held for review', blocked: 'refund blocked', refused: 'refused by the store',
};

// -- small helpers ---------------------------------------------------------------------------------
function el(tag, opts = {}, ...children) {
  const n = document.createElement(tag);
  if (opts.cls) n.className = opts.cls;
  if (opts.text !== undefined && opts.text !== null) n.textContent = String(opts.text);
  for (const [k, v] of Object.entries(opts.attrs || {})) n.setAttribute(k, String(v));
  for (const c of children) if (c !== null && c !== undefined && c !== false) n.append(c);
  return n;
}

function badge(text, key = text) {
  return el('span', { cls: `badge tone-${TONE[key] || 'neutral'}`, text });
}

function setBadge(node, text, key = text) {
  node.textContent = text;
  node.className = `badge tone-${TONE[key] || 'neutral'}`;
}

const wholeMoney = new Intl.NumberFormat('en-US', { style: 'currency', currency: 'USD', maximumFractionDigits: 0 });
const cents = (c) => money.format((Number(c) || 0) / 100);
const compactMoney = new Intl.NumberFormat('en-US', { style: 'currency', currency: 'USD', notation: 'compact', maximumFractionDigits: 1 });
const dollars = (c) => (Math.abs(c) >= 1e6 ? compactMoney : wholeMoney).format((Number(c) || 0) / 100);
const clock = (us) => new Date(Number(us) / 1000).toLocaleTimeString([], { hour12: false });
const num = (n) => (n === null || n === undefined ? '–' : Number(n).toLocaleString('en-US'));
const reasonText = (code) => REASONS[code] || code || '';
const storeName = (name) => `store ${String(name).toUpperCase()}`;
const cap = (text) => text.charAt(0).toUpperCase() + text.slice(1); // a sentence that starts with a store
const isHacked = (t) => Array.isArray(t.local_reasons) && t.local_reasons.length === 1 && t.local_reasons[0] === HACKED_REASON;

// Server texts name stores in lower case and cite raw attempt ids: one spelling of store names here
// ("store A"), and an attempt known in `order` (attempt id -> "return 2") by its place in the story.
function tidy(text, order = new Map()) {
  let out = String(text || '');
  out = out.replace(/\bstore ([a-z0-9][a-z0-9-]*)\b/g, (m, n) => (stores.has(n) ? storeName(n) : m));
  out = out.replace(/\(([a-z0-9, -]+) unreachable\)/g, (m, names) => `(${names.split(', ').map(storeName).join(', ')} unreachable)`);
  out = out.replace(/attempt ([^\s,)]+)/g, (m, id) => order.get(id) || 'an earlier return');
  return out;
}
const short = (id) => (String(id).length > 12 ? `…${String(id).slice(-9)}` : String(id)); // ids start with a time

function ms(v) {
  if (v === null || v === undefined) return '–';
  if (v >= 1000) return `${(v / 1000).toFixed(2)} s`;
  if (v >= 10) return `${Math.round(v)} ms`;
  return `${v.toFixed(1)} ms`;
}

// A photo this viewer may not open (the API gives its links only to an authorised viewer, e.g. none
// without the API token in Kubernetes): not requested, so no 401 per thumbnail.
const PRIVATE = 'private';

function photo(sha, side, alt) {
  if (sha === PRIVATE) return el('span', { cls: `nophoto nophoto-${side}`, text: 'photo private', attrs: { title: 'photos need the API token' } });
  if (!sha || !SHA.test(sha)) return el('span', { cls: `nophoto nophoto-${side}`, text: 'no photo' });
  const img = el('img', { cls: `photo photo-${side}`, attrs: { alt, width: side, height: side, decoding: 'async' } });
  img.src = `/api/photos/${sha}/thumbnail?side=${side * 2}`;
  return img;
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function detail(body) {
  const d = body && body.detail;
  if (Array.isArray(d)) return d.map((e) => `${(e.loc || []).slice(1).join('.')}: ${e.msg}`).join('; ');
  return d ? String(d) : '';
}

// The controls (every POST) need the service's API token when it has one (in Kubernetes): asked for on
// the first 401, kept for this tab only, and sent as a bearer token from then on.
const TOKEN_KEY = 'frauddemo-api-token';

async function api(path, { method = 'GET', body, timeout = 20000 } = {}, asked = false) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), timeout);
  try {
    const headers = body === undefined ? {} : { 'Content-Type': 'application/json' };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token && method !== 'GET') headers.Authorization = `Bearer ${token}`;
    const res = await fetch(path, {
      method, cache: 'no-store', signal: ctl.signal, headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const json = (res.headers.get('content-type') || '').includes('json') ? await res.json() : null;
    if (res.status === 401 && method !== 'GET' && !asked) {
      const given = window.prompt('The demo\'s controls need its API token (kubectl get secret <name>-api-token):');
      if (given && given.trim()) {
        sessionStorage.setItem(TOKEN_KEY, given.trim());
        clearTimeout(timer);
        return api(path, { method, body, timeout }, true);
      }
    }
    if (res.status === 401) sessionStorage.removeItem(TOKEN_KEY);
    if (!res.ok) throw new ApiError(res.status, detail(json) || `${res.status} ${res.statusText}`);
    return json;
  } catch (e) {
    if (e.name === 'AbortError') throw new ApiError(0, 'the service did not answer in time');
    if (e instanceof TypeError) throw new ApiError(0, 'the service is unreachable');
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

function say(node, text, tone) {
  node.textContent = text;
  node.className = `result${tone ? ` tone-text-${tone}` : ''}`;
}

// -- a list capped in the DOM, newest first, keyed (so snapshots and events merge) -----------------
class Feed {
  constructor(ol, cap, render, onChange) {
    Object.assign(this, { ol, cap, render, onChange });
    this.rows = []; // {key, time, data, node}, newest first
    this.byKey = new Map();
  }

  upsert(key, time, data) {
    const row = this.byKey.get(key);
    if (row) {
      row.data = { ...row.data, ...data };
      this.redraw(row);
      return row;
    }
    let i = this.rows.findIndex((r) => r.time < time);
    if (i < 0) i = this.rows.length;
    if (i >= this.cap) return null; // older than everything shown
    const fresh = { key, time, data, node: this.render(data) };
    this.rows.splice(i, 0, fresh);
    this.byKey.set(key, fresh);
    if (i === 0) this.ol.prepend(fresh.node);
    else this.rows[i - 1].node.after(fresh.node);
    while (this.rows.length > this.cap) {
      const gone = this.rows.pop();
      gone.node.remove();
      this.byKey.delete(gone.key);
    }
    if (this.onChange) this.onChange(this);
    return fresh;
  }

  update(key, patch) {
    const row = this.byKey.get(key);
    if (row) {
      row.data = { ...row.data, ...patch };
      this.redraw(row);
    }
    return row;
  }

  redraw(row) {
    const node = this.render(row.data);
    row.node.replaceWith(node);
    row.node = node;
  }

  alive(key) {
    return this.byKey.has(key);
  }

  clear() {
    this.rows = [];
    this.byKey.clear();
    this.ol.replaceChildren();
    if (this.onChange) this.onChange(this);
  }
}

// -- details fetched lazily (photos of list rows), newest first, two at a time --------------------
const lazy = { jobs: [], busy: 0 };

function later(alive, run) {
  lazy.jobs.push({ alive, run });
  pump();
}

function pump() {
  while (lazy.busy < 2 && lazy.jobs.length && !document.hidden) { // resumed when the tab shows again
    const job = lazy.jobs.pop();
    if (!job.alive()) continue;
    lazy.busy += 1;
    job.run().catch(() => {}).finally(() => {
      lazy.busy -= 1;
      pump();
    });
  }
}

// -- state -----------------------------------------------------------------------------------------
const stores = new Map(); // name -> {refs, purchases: Feed, returns: Feed}
const state = {
  catalogue: [], hackedRunning: null, linkState: 'unknown', linkPending: null, links: [],
  alert: null, alertSeq: 0, olderBefore: null, generation: null, unseen: 0,
};
let alerts; // Feed of alerts

// -- stores: columns, lists, tills -----------------------------------------------------------------
function storeColumn(name, index) {
  const frag = $('tpl-store').content.cloneNode(true);
  const refs = {};
  for (const n of frag.querySelectorAll('[data-ref]')) refs[n.dataset.ref] = n;
  refs.section.id = `store-${name}`;
  refs.section.classList.add(index === 0 ? 'store-first' : index === 1 ? 'store-second' : 'store-more');
  refs.title.id = `store-${name}-title`;
  refs.title.textContent = `Store ${name.toUpperCase()}`;
  refs.section.setAttribute('aria-labelledby', refs.title.id);
  for (const [ref, label] of [['purchases', 'purchases'], ['returns', 'returns']]) {
    refs[ref].setAttribute('aria-label', `Store ${name.toUpperCase()} ${label}, newest first`);
  }
  refs['buy-customer'].value = `cust-${String(Math.floor(Math.random() * 100000)).padStart(5, '0')}`;
  for (const item of state.catalogue) {
    refs['buy-item'].append(el('option', { text: `${item.name} (${cents(item.price_cents)})`, attrs: { value: item.sku } }));
  }
  // every form control gets an id-free, unique accessible name through its <label>; tests find them by it
  refs.buy.addEventListener('submit', (e) => { e.preventDefault(); buy(name); });
  refs.ret.addEventListener('submit', (e) => { e.preventDefault(); giveBack(name); });
  const s = {
    refs,
    purchases: new Feed(refs.purchases, LIST_CAP, (d) => purchaseRow(d)),
    returns: new Feed(refs.returns, LIST_CAP, (d) => returnRow(d)),
  };
  stores.set(name, s);
  const grid = $('grid');
  if (index === 0) grid.insertBefore(frag, $('link'));
  else grid.insertBefore(frag, $('compare'));
  return s;
}

function purchaseRow(d) {
  const use = el('button', { cls: 'btn btn-tiny', text: 'Return', attrs: { type: 'button', title: `Put receipt ${d.receipt} in the return forms`, 'aria-label': `Return receipt ${d.receipt}` } });
  use.addEventListener('click', () => useReceipt(d.receipt, true));
  return el('li', { cls: 'item' },
    d.photo === undefined ? el('span', { cls: `nophoto nophoto-${THUMB}`, text: '…' }) : photo(d.photo, THUMB, `purchase photo of ${d.customer}`),
    el('div', { cls: 'item-main' },
      el('p', { cls: 'item-line' }, el('span', { cls: 'mono', text: short(d.receipt), attrs: { title: `receipt ${d.receipt}` } }),
        el('span', { cls: 'amount', text: cents(d.amount_cents) })),
      el('p', { cls: 'item-sub' }, el('span', { cls: 'who', text: d.customer }), ` · ${clock(d.committed_us)}`)),
    use);
}

function returnRow(d) {
  const v = d.verdict;
  let verdict;
  if (v && v.decision) {
    verdict = badge(`${DETECTOR_SHORT[v.decision] || v.decision} ${v.score}`, v.decision);
    if (v.decision !== 'allow') {
      const id = `al-${d.attempt}`;
      verdict = el('button', { cls: 'badge-btn', attrs: { type: 'button', title: `Show alert ${id}` } }, verdict);
      verdict.addEventListener('click', () => showAlert(id, { pin: true, focus: true }));
    }
  } else {
    verdict = badge('judging…', 'pending');
  }
  return el('li', { cls: 'item' },
    d.photo ? (d.photo_sha === undefined ? el('span', { cls: `nophoto nophoto-${THUMB}`, text: '…' }) : photo(d.photo_sha, THUMB, `return photo of ${d.customer}`))
      : el('span', { cls: `nophoto nophoto-${THUMB}`, text: 'no photo' }),
    el('div', { cls: 'item-main' },
      el('p', { cls: 'item-line' }, el('span', { cls: 'mono', text: short(d.receipt), attrs: { title: `receipt ${d.receipt}` } }),
        el('span', { cls: 'amount', text: cents(d.amount_cents) })),
      el('p', { cls: 'item-sub' }, el('span', { cls: 'who', text: d.customer }), ` · ${clock(d.committed_us)}`),
      el('dl', { cls: 'item-badges' },
        el('div', {}, el('dt', { text: 'store' }), el('dd', {}, badge(d.local_decision || '?', d.local_decision))),
        el('div', {}, el('dt', { text: 'detector' }), el('dd', {}, verdict)))));
}

function addPurchase(name, d) {
  const s = stores.get(name);
  if (!s) return;
  const known = s.purchases.byKey.get(d.receipt);
  const row = s.purchases.upsert(d.receipt, d.committed_us, known ? {} : d);
  if (row && row.data.photo === undefined) {
    later(() => s.purchases.alive(d.receipt), async () => {
      try {
        const r = await api(`/api/purchases/${encodeURIComponent(d.receipt)}`);
        const sha = (r.receipt && r.receipt.photo) || null;
        s.purchases.update(d.receipt, { photo: sha && !r.purchase_photo ? PRIVATE : sha });
      } catch (e) {
        if (e.status === 404) s.purchases.update(d.receipt, { photo: null });
      }
    });
  }
}

function addReturn(name, d) {
  const s = stores.get(name);
  if (!s) return;
  const patch = { ...d };
  if (!patch.verdict) delete patch.verdict; // a snapshot read before the verdict never hides it
  const row = s.returns.byKey.has(d.attempt) ? s.returns.update(d.attempt, patch) : s.returns.upsert(d.attempt, d.committed_us, d);
  if (row && d.photo && row.data.photo_sha === undefined) {
    later(() => s.returns.alive(d.attempt), async () => {
      try {
        const r = await api(`/api/returns/${encodeURIComponent(d.attempt)}`);
        s.returns.update(d.attempt, { photo_sha: r.photo && !r.photo_urls ? PRIVATE : r.photo || null, ...(r.verdict ? { verdict: r.verdict } : {}) });
      } catch (e) {
        if (e.status === 404) s.returns.update(d.attempt, { photo_sha: null });
      }
    });
  }
}

function useReceipt(receipt, focus) {
  for (const s of stores.values()) s.refs['ret-receipt'].value = receipt;
  if (focus) {
    const first = stores.values().next().value;
    if (first) first.refs['ret-receipt'].focus();
  }
}

// -- webcam (optional): frames become the tills' photos ----------------------------------------------
const cam = { stream: null };

async function webcam(on) {
  const video = $('webcam-video');
  if (!on) {
    if (cam.stream) for (const t of cam.stream.getTracks()) t.stop();
    cam.stream = null;
    video.srcObject = null;
    video.hidden = true;
    say($('webcam-msg'), 'Tills use the synthetic camera.');
    return;
  }
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    $('webcam').checked = false;
    say($('webcam-msg'), 'This browser offers no webcam here (it needs https or localhost).', 'bad');
    return;
  }
  try {
    cam.stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 } }, audio: false });
    video.srcObject = cam.stream;
    video.hidden = false;
    await video.play();
    say($('webcam-msg'), 'Webcam on: the tills photograph whoever is in front of it.', 'ok');
  } catch (e) {
    $('webcam').checked = false;
    cam.stream = null;
    video.hidden = true;
    say($('webcam-msg'), `No webcam (${e.name || e}): the tills use the synthetic camera.`, 'bad');
  }
}

function frame() {
  const v = $('webcam-video');
  if (!cam.stream || !v.videoWidth) return null;
  const k = Math.min(1, 640 / Math.max(v.videoWidth, v.videoHeight));
  const c = document.createElement('canvas');
  c.width = Math.round(v.videoWidth * k);
  c.height = Math.round(v.videoHeight * k);
  c.getContext('2d').drawImage(v, 0, 0, c.width, c.height);
  return c.toDataURL('image/jpeg', 0.9).split(',', 2)[1];
}

function photoFields(choice) {
  if (choice === 'none') return { photo: null, capture: false };
  const b64 = frame();
  return b64 ? { photo: b64, capture: false } : { photo: null, capture: true };
}

// -- till controls -----------------------------------------------------------------------------------
async function buy(name) {
  const { refs } = stores.get(name);
  const out = refs['till-result'];
  const btn = refs.buy.querySelector('button');
  btn.disabled = true;
  say(out, 'Buying…');
  try {
    const qty = Number(refs['buy-qty'].value);
    const p = await api('/api/purchases', {
      method: 'POST',
      body: { store: name, customer: refs['buy-customer'].value, items: { [refs['buy-item'].value]: qty }, ...photoFields(refs['buy-photo'].value) },
    });
    useReceipt(p.receipt, false);
    say(out, `Sold: receipt ${p.receipt} to ${p.customer}${p.photo ? ', photo taken' : ', no photo'}.`, 'ok');
    out.dataset.receipt = p.receipt;
  } catch (e) {
    say(out, `Purchase failed: ${e.message}`, 'bad');
  } finally {
    btn.disabled = false;
  }
}

async function giveBack(name) {
  const { refs } = stores.get(name);
  const out = refs['till-result'];
  const btn = refs.ret.querySelector('button');
  btn.disabled = true;
  say(out, 'Returning…');
  try {
    const r = await api('/api/returns', {
      method: 'POST', body: { store: name, receipt: refs['ret-receipt'].value.trim(), ...photoFields(refs['ret-photo'].value) },
    });
    const why = (r.local_reasons || []).map((x) => tidy(x)).join('; ');
    say(out, `Return ${r.attempt}: ${storeName(name)} ${r.local_decision} it${why ? ` (${why})` : ''}.`, TONE[r.local_decision]);
  } catch (e) {
    say(out, `Return failed: ${e.message}`, 'bad');
  } finally {
    btn.disabled = false;
  }
}

// -- demo controls ---------------------------------------------------------------------------------
// -- the guided demo: 1 Scenario 1 · 2 partition · 3 one receipt returned at both tills · 4 heal ------
// Every sentence is built from what the stores and the detector recorded (the API's answers), never
// from what the step expected.
const guide = { receipt: null, returned: false, busy: false };

function guideSay(text, tone) {
  const n = $('guide-note');
  n.textContent = text;
  n.className = `guide-note${tone ? ` tone-text-${tone}` : ''}`;
}

function stepDone(n) {
  for (const li of document.querySelectorAll('#guide .step')) {
    const k = Number(li.dataset.step);
    if (k === n) li.classList.add('step-done');
    li.classList.toggle('step-next', k === n + 1 || (n === 4 && k === 3));
  }
}

const sleep = (msec) => new Promise((r) => setTimeout(r, msec));

async function poll(what, fn, timeoutMs = 15000, every = 150) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${timeoutMs / 1000} s`);
    await sleep(every);
  }
}

async function guided(btn, run) {
  if (guide.busy) return;
  guide.busy = true;
  const steps = [...document.querySelectorAll('#guide .btn-step')];
  for (const b of steps) b.disabled = true;
  btn.setAttribute('aria-busy', 'true');
  try {
    await run();
  } catch (e) {
    guideSay(`${btn.firstChild.textContent.trim()} failed: ${e.message}`, 'bad');
  } finally {
    btn.removeAttribute('aria-busy');
    for (const b of steps) b.disabled = false;
    guide.busy = false;
  }
}

const storeNames = () => [...stores.keys()];

async function linkStatus() {
  const st = await api('/api/status');
  renderStatus(st);
  return st;
}

// A purchase at the first store with a photo from its camera, once the second store has heard of it.
async function sellForTheGuide() {
  const [a, b] = storeNames();
  const item = state.catalogue[0];
  const customer = `cust-${String(Math.floor(Math.random() * 100000)).padStart(5, '0')}`;
  const p = await api('/api/purchases', { method: 'POST', body: { store: a, customer, items: { [item.sku]: 1 }, capture: true } });
  await poll(`receipt ${p.receipt} reaching ${storeName(b)}`, async () => {
    const r = await api(`/api/purchases/${encodeURIComponent(p.receipt)}`);
    return r.replicated[b] && r.replicated[b].receipt;
  }, 10000, 50);
  guide.receipt = p.receipt;
  guide.returned = false;
  return { receipt: p.receipt, customer, item: item.name };
}

async function runScenario() {
  await guided($('btn-scenario'), async () => {
    guideSay('Scenario 1 running: a purchase at store A, the customer\'s return there, and a hacked till at store B refunding the same receipt…');
    const r = await api('/api/scenarios/fraud', { method: 'POST', body: {}, timeout: 60000 });
    showAlert(r.alert.id, { pin: true }); // the presenter looks at this one, whatever comes next
    const [legit, fraud] = r.attempts;
    const gap = (fraud.committed_us - legit.committed_us) / 1000;
    // whether store B had heard of A's return when the hacked till wrote its refund: the store's own record
    const story = await api(`/api/purchases/${encodeURIComponent(r.receipt)}`);
    const rec = story.attempts.find((t) => t.attempt === fraud.attempt);
    const heard = rec && Array.isArray(rec.store_had_heard_of) ? rec.store_had_heard_of.includes(legit.attempt) : null;
    const knew = heard === null ? `the return at A reached B in ${ms(r.replication_lag_ms)}`
      : heard ? `${storeName(fraud.store)} had already heard of the return at ${storeName(legit.store)}, but a hacked till does not ask`
        : `${storeName(fraud.store)} had not heard of the return at ${storeName(legit.store)} yet; it did ${ms(r.replication_lag_ms)} after that return`;
    guideSay(`Receipt ${r.receipt}: ${storeName(legit.store)} ${legit.local_decision} the customer's return (photo: ${legit.verification}). `
      + `${ms(gap)} later the hacked till ${fraud.terminal} at ${storeName(fraud.store)} refunded the same receipt without asking its store `
      + `(${knew}). `
      + `The detector ${DETECTOR[r.alert.decision] || r.alert.decision} it, score ${r.alert.score}, ${ms(r.detection_latency_ms)} after the refund: `
      + `${r.alert.codes.map(reasonText).join(', ')}. Next: step 2.`, TONE[r.alert.decision]);
    stepDone(1);
  });
}

async function guidePartition() {
  await guided($('btn-guide-partition'), async () => {
    const st = await linkStatus();
    if (st.links.some((l) => l.state === 'partitioned')) {
      guideSay('The link is already partitioned. Step 4 heals it; then step 2 sells a receipt both stores know and partitions again.', 'warn');
      return;
    }
    const [a, b] = storeNames();
    guideSay(`Selling a receipt at ${storeName(a)} and waiting for ${storeName(b)} to hear of it…`);
    const sold = await sellForTheGuide();
    await api('/api/link', { method: 'POST', body: { action: 'partition' } });
    const held = await poll('the partition', async () => {
      const s = await linkStatus();
      return s.links.length && s.links.every((l) => l.state === 'partitioned') && s;
    }, 10000, 200);
    const backlog = held.links.reduce((n, l) => n + (Number(l.backlog) || 0), 0);
    guideSay(`Receipt ${sold.receipt} (${sold.item}, ${sold.customer}) sold at ${storeName(a)}; the purchase replicated, so ${storeName(b)} knows the receipt too. `
      + `The link is now partitioned: each store keeps selling and refunding alone, and what it writes waits in the backlog (${num(backlog)} now). `
      + `Next: step 3 returns this receipt at both tills.`, 'warn');
    stepDone(2);
  });
}

async function guideReturn() {
  await guided($('btn-guide-return'), async () => {
    const [a, b] = storeNames();
    let st = await linkStatus();
    const partitioned = st.links.some((l) => l.state === 'partitioned');
    if (!guide.receipt || guide.returned) {
      if (partitioned) {
        guideSay('This step needs a receipt both stores know and nobody returned yet: heal (step 4), then step 2 sells one and partitions.', 'warn');
        return;
      }
      guideSay(`The link is up: selling a fresh receipt at ${storeName(a)} for this step…`);
      await sellForTheGuide();
    }
    const receipt = guide.receipt;
    guideSay(`Returning receipt ${receipt} at ${storeName(a)}, then at ${storeName(b)}…`);
    const ra = await api('/api/returns', { method: 'POST', body: { store: a, receipt, capture: true } });
    const rb = await api('/api/returns', { method: 'POST', body: { store: b, receipt, capture: true } });
    guide.returned = true;
    const story = await poll('the detector\'s verdicts on both returns', async () => {
      const r = await api(`/api/purchases/${encodeURIComponent(receipt)}`);
      const mine = r.attempts.filter((t) => t.attempt === ra.attempt || t.attempt === rb.attempt);
      return mine.length === 2 && mine.every((t) => t.verdict && t.verdict.decision) && r;
    }, 20000, 200);
    st = await linkStatus();
    const byId = new Map(story.attempts.map((t) => [t.attempt, t]));
    const order = new Map(story.attempts.map((t, i) => [t.attempt, `return ${i + 1}`]));
    const said = (r, other) => {
      const t = byId.get(r.attempt);
      const knew = (r.local_reasons || []).map((x) => tidy(x, order)).find((x) => /already refunded|held for review/.test(x));
      const heard = Array.isArray(t.store_had_heard_of) ? t.store_had_heard_of.includes(other.attempt) : null;
      if (heard || (heard === null && knew)) {
        return `it had heard of the return at ${storeName(other.store)}${knew ? ` and refused by itself: ${knew}` : ''}`;
      }
      if (heard === false && r === rb) return `it had not heard of the return at ${storeName(a)}${partitioned ? ': the link is partitioned' : ''}`;
      return 'it had heard of no other return of this receipt';
    };
    const vb = byId.get(rb.attempt).verdict;
    const va = byId.get(ra.attempt).verdict;
    const flagged = [[ra, va], [rb, vb]].filter(([, v]) => v.decision !== 'allow');
    const after = (r, v) => ms(Math.max(0, v.decided_us - byId.get(r.attempt).committed_us) / 1000);
    const acts = flagged.map(([r, v]) => (v.decision === 'block'
      ? `blocked the return at ${storeName(r.store)} (score ${v.score}) ${after(r, v)} after it`
      : `sent the return at ${storeName(r.store)} to review (score ${v.score}) ${after(r, v)} after it`));
    const why = [...new Set(flagged.flatMap(([, v]) => v.reasons.map((x) => reasonText(x.code))))].join(', ');
    const detector = flagged.length ? `${acts.join(' and ')}: ${why}` : 'allowed both';
    guideSay(`Receipt ${receipt}: ${cap(storeName(a))} ${ra.local_decision}: ${said(ra, rb)}. ${cap(storeName(b))} ${rb.local_decision}: ${said(rb, ra)}. `
      + `The detector ${detector}${partitioned ? '. It reads both stores directly, so it saw both returns during the partition' : ''}. `
      + (partitioned ? 'Next: step 4 heals the link.' : 'With the link up the stores stop a double return themselves; the detector is the second line.'),
    partitioned ? 'warn' : 'ok');
    const al = [rb, ra].map((r) => byId.get(r.attempt).alert).find(Boolean);
    if (al) showAlert(al, { pin: true });
    stepDone(3);
  });
}

async function guideHeal() {
  await guided($('btn-guide-heal'), async () => {
    let st = await linkStatus();
    if (!st.links.some((l) => l.state === 'partitioned')) {
      guideSay('The link is up: there is nothing to heal. Step 2 partitions it.', 'ok');
      return;
    }
    const receipt = guide.receipt;
    const verdictsOf = (r) => new Map(r.attempts.map((t) => [t.attempt, t.verdict ? t.verdict.decision : '']));
    const before = receipt ? await api(`/api/purchases/${encodeURIComponent(receipt)}`) : null;
    guideSay('Healing the link: each store merges what the other wrote during the partition…');
    await api('/api/link', { method: 'POST', body: { action: 'heal' } });
    st = await poll('the merge after the heal', async () => {
      const s = await linkStatus();
      return s.links.every((l) => l.state === 'up' && Number(l.backlog) === 0 && typeof l.healed_ms_ago === 'number') && s;
    }, 20000, 200);
    const merged = st.links.map((l) => `${l.source.toUpperCase()} → ${l.target.toUpperCase()} merged ${num(l.healed_backlog)}`).join(', ');
    const lasted = Math.max(...st.links.map((l) => Number(l.last_partition_ms) || 0));
    let told = '';
    if (receipt) {
      const after = await poll(`both stores knowing every return of ${receipt}`, async () => {
        const r = await api(`/api/purchases/${encodeURIComponent(receipt)}`);
        return Object.values(r.replicated).every((v) => v.attempts === r.attempts.length) && r;
      }, 10000, 150);
      const was = Object.entries(before.replicated).map(([k, v]) => `${storeName(k)} ${v.attempts}`).join(', ');
      const old = verdictsOf(before);
      const changed = after.attempts.filter((t) => old.get(t.attempt) && t.verdict && old.get(t.attempt) !== t.verdict.decision);
      told = ` Receipt ${receipt}: returns known before the heal ${was}; now both stores know all ${after.attempts.length}. `
        + (changed.length ? `The detector changed ${changed.length} verdict(s) on the merged data.`
          : 'The detector\'s verdicts did not change: it had read both stores during the partition.');
    }
    guideSay(`Healed after ${secs(lasted)} partitioned: ${merged} entries.${told} Step 3 again, with the link up, shows what store B decides when it has heard of the other return.`, 'ok');
    if (state.alert) showAlert(state.alert, { quiet: true });
    stepDone(4);
  });
}

async function toggleLink() {
  const action = state.linkState === 'partitioned' ? 'heal' : 'partition';
  const btn = $('btn-link');
  btn.disabled = true;
  try {
    await api('/api/link', { method: 'POST', body: { action } });
    state.linkPending = action === 'heal' ? 'up' : 'partitioned';
    btn.textContent = action === 'heal' ? 'Healing…' : 'Partitioning…';
  } catch (e) {
    btn.disabled = false;
    say($('reset-result'), `Could not ${action} the link: ${e.message}`, 'bad');
  }
}

function renderHacked(running) {
  state.hackedRunning = running;
  const btn = $('btn-hacked');
  btn.setAttribute('aria-pressed', String(running));
  btn.textContent = running ? 'Hacked POS: running — stop it' : 'Hacked POS: stopped — start it';
  btn.classList.toggle('btn-danger-soft', running);
}

async function toggleHacked() {
  const btn = $('btn-hacked');
  btn.disabled = true;
  try {
    const r = await api('/api/hacked-pos', { method: 'POST', body: { running: !state.hackedRunning } });
    renderHacked(r.running);
  } catch (e) {
    say($('reset-result'), `Hacked POS: ${e.message}`, 'bad');
  } finally {
    btn.disabled = false;
  }
}

let resetArmed = null;

async function reset() {
  const btn = $('btn-reset');
  if (!resetArmed) {
    btn.textContent = 'Click again to delete every purchase, return and alert';
    btn.classList.add('armed');
    resetArmed = setTimeout(disarm, 5000);
    return;
  }
  disarm();
  btn.disabled = true;
  say($('reset-result'), 'Resetting: partitioning, wiping every store, restoring the link…');
  try {
    const r = await api('/api/reset', { method: 'POST', body: {}, timeout: 30000 });
    const n = Object.values(r.deleted_keys || {}).reduce((a, b) => a + b, 0);
    say($('reset-result'), `Demo data reset (${n} keys deleted).`, 'ok');
    startOver();
  } catch (e) {
    say($('reset-result'), `Reset failed: ${e.message}`, 'bad');
  } finally {
    btn.disabled = false;
  }
}

function disarm() {
  clearTimeout(resetArmed);
  resetArmed = null;
  const btn = $('btn-reset');
  btn.textContent = 'Reset demo data';
  btn.classList.remove('armed');
}

function startOver() {
  for (const s of stores.values()) {
    s.purchases.clear();
    s.returns.clear();
    say(s.refs['till-result'], '');
  }
  guideSay('Start with step 1. Each step says what each store decided and why, and what the detector saw.');
  guide.receipt = null;
  for (const li of document.querySelectorAll('#guide .step')) li.classList.remove('step-done', 'step-next');
  $('toasts').replaceChildren();
  alerts.clear();
  alerts.cap = ALERT_CAP;
  state.alert = null;
  state.alertSeq += 1;
  $('compare-body').hidden = true;
  $('compare-empty').hidden = false;
  state.generation = null;
  state.olderBefore = null;
  loadSnapshot();
}

// -- replication link and stores' state --------------------------------------------------------------
function renderStatus(st) {
  const links = (st.links || []).slice().sort((a, b) => `${a.source}${a.target}`.localeCompare(`${b.source}${b.target}`));
  state.links = links;
  const ul = $('links');
  ul.replaceChildren(...links.map((l) => el('li', { cls: 'link-row' },
    el('span', { cls: 'link-name', text: `${l.source.toUpperCase()} → ${l.target.toUpperCase()}` }),
    badge(l.state, l.state),
    // partitioned, the last lag measured means nothing: how long, and what waits to be merged
    el('span', { cls: 'link-fig', text: isPartitioned(l) ? `for ${secs(l.partitioned_for_ms)}` : `lag ${ms(l.lag_ms)}` }),
    el('span', { cls: 'link-fig', text: `backlog ${num(l.backlog)}` }),
    recentlyHealed(l) ? el('span', { cls: 'link-fig link-healed', text: `healed ${secs(l.healed_ms_ago)} ago: merged ${num(l.healed_backlog)} after ${secs(l.last_partition_ms)}` }) : null)));
  const held = links.filter(isPartitioned);
  const healed = links.filter(recentlyHealed);
  if (held.length) {
    const longest = Math.max(...held.map((l) => Number(l.partitioned_for_ms) || 0));
    say($('link-detail'), `partitioned for ${secs(longest)}, backlog ${num(held.reduce((n, l) => n + (Number(l.backlog) || 0), 0))}`, 'warn');
  } else if (healed.length) {
    say($('link-detail'), `healed ${secs(Math.min(...healed.map((l) => l.healed_ms_ago)))} ago: ${num(healed.reduce((n, l) => n + (Number(l.healed_backlog) || 0), 0))} entries merged`, 'ok');
  } else {
    say($('link-detail'), '');
  }
  const states = links.map((l) => l.state);
  let overall = 'up';
  for (const s of ['down', 'stale', 'partitioned', 'resyncing', 'starting', 'unknown']) {
    if (states.includes(s)) { overall = s; break; }
  }
  if (!links.length) overall = 'unknown';
  state.linkState = overall;
  setBadge($('link-state'), overall === 'up' ? 'link up' : `link ${overall}`, overall);
  const btn = $('btn-link');
  if (!state.linkPending || state.linkPending === overall || (state.linkPending === 'up' && overall !== 'partitioned')) {
    state.linkPending = null;
    btn.disabled = false;
    btn.textContent = overall === 'partitioned' ? 'Heal the link' : 'Partition the link';
  }
  for (const [name, s] of stores) {
    const x = (st.stores && st.stores[name]) || {};
    const readOnly = x.up && x.writable === false;
    setBadge(s.refs.state, !x.up ? 'down' : readOnly ? 'refusing writes' : 'up', !x.up ? 'down' : readOnly ? 'refused' : 'up');
    s.refs.health.replaceChildren(...storeHealth(x));
    s.refs.health.className = `store-health${readOnly ? ' tone-text-bad' : ''}`;
  }
}

const HEALED_SHOWN_MS = 60000; // a heal is told in the link rows for a minute
const isPartitioned = (l) => l.state === 'partitioned' && typeof l.partitioned_for_ms === 'number';
const recentlyHealed = (l) => !isPartitioned(l) && typeof l.healed_ms_ago === 'number' && l.healed_ms_ago < HEALED_SHOWN_MS;
const secs = (v) => (Number(v) >= 10000 ? `${Math.round(Number(v) / 1000)} s` : `${(Number(v) / 1000).toFixed(1)} s`);

// A store's memory (used of its maxmemory) and, when it refuses writes, why (disk full, memory full).
function storeHealth(x) {
  if (!x.up) return [document.createTextNode(x.error ? `unreachable: ${x.error}` : 'unreachable')];
  const out = [];
  const m = x.memory;
  if (m) {
    const used = `memory ${bytes(m.used_bytes)}`;
    out.push(el('span', { cls: 'store-mem', text: m.max_bytes ? `${used} of ${bytes(m.max_bytes)}` : used }));
  }
  if (x.problem) out.push(el('span', { cls: 'store-problem', text: ` · ${x.problem}` }));
  return out;
}

function bytes(n) {
  const v = Number(n) || 0;
  if (v >= 1024 ** 3) return `${(v / 1024 ** 3).toFixed(1)} GiB`;
  if (v >= 1024 ** 2) return `${(v / 1024 ** 2).toFixed(1)} MiB`;
  return `${Math.round(v / 1024)} KiB`;
}

// -- summary -----------------------------------------------------------------------------------------
let summaryTimer = null;

function summarySoon() {
  if (!summaryTimer) summaryTimer = setTimeout(refreshSummary, 1000);
}

async function refreshSummary() {
  clearTimeout(summaryTimer);
  summaryTimer = null;
  let s;
  try {
    s = await api('/api/summary');
  } catch {
    return;
  }
  if (state.generation !== null && s.generation !== state.generation) {
    state.generation = s.generation; // another presenter reset the demo: start over
    startOver();
    return;
  }
  state.generation = s.generation;
  $('sum-purchases').textContent = num(s.purchases);
  $('sum-returns').textContent = num(s.returns);
  $('sum-held').textContent = num(s.frauds.held);
  $('sum-blocked').textContent = num(s.frauds.blocked);
  $('sum-protected').textContent = cents(s.value_protected_cents);
  const l = s.detection_latency_ms;
  $('sum-latency').textContent = l.samples ? `${ms(l.p50)} / ${ms(l.p99)}` : '–';
  for (const [name, st] of stores) {
    const x = s.stores[name] || {};
    st.refs['n-purchases'].textContent = num(x.purchases);
    st.refs['n-returns'].textContent = num(x.returns);
    st.refs['n-alerts'].textContent = num(x.alerts);
    st.refs['n-protected'].textContent = x.value_protected_cents === undefined ? '–' : dollars(x.value_protected_cents);
  }
}

// -- alerts: the feed, notifications and the comparison ---------------------------------------------
function alertRow(d) {
  const btn = el('button', { cls: 'alert-btn', attrs: { type: 'button', 'aria-pressed': String(state.alert === d.alert) } },
    el('span', { cls: 'alert-top' }, badge(DETECTOR[d.decision] || d.decision, d.decision), el('span', { cls: 'alert-score', text: `${d.score}` }),
      el('span', { cls: 'alert-reason', text: reasonText(d.reason) }),
      el('span', { cls: 'item-sub alert-when', text: `Store ${String(d.store).toUpperCase()} · ${clock(d.time)}` })),
    el('span', { cls: 'item-sub mono', text: `receipt ${d.receipt}` }));
  btn.addEventListener('click', () => showAlert(d.alert, { pin: true, focus: true }));
  return el('li', { cls: `item alert-item${d.fresh ? ' fresh' : ''}` }, btn);
}

function upsertAlert(a, fresh) {
  const d = {
    alert: a.alert, decision: a.decision, score: Number(a.score), reason: a.reason, store: a.store,
    receipt: a.receipt, time: Number(a.time), fresh,
  };
  return alerts.upsert(d.alert, d.time, d);
}

function toast(d) {
  const box = $('toasts');
  const t = el('button', { cls: `toast tone-${TONE[d.decision] || 'neutral'}`, attrs: { type: 'button' } },
    el('strong', { text: `${d.decision === 'block' ? 'Fraud blocked' : d.decision === 'review' ? 'Sent to review' : d.decision} · score ${d.score}` }),
    el('span', { text: `Store ${String(d.store).toUpperCase()} · ${reasonText(d.reason)} · receipt ${d.receipt}` }));
  t.addEventListener('click', () => {
    showAlert(d.alert, { pin: true, focus: true });
    t.remove();
  });
  box.replaceChildren(t); // the newest only; the feed keeps the others
  setTimeout(() => t.remove(), 10000);
  if (document.hidden) {
    state.unseen += 1;
    document.title = `(${state.unseen}) FraudDemo`;
  }
}

let compareTimer = null;

function compareSoon() {
  clearTimeout(compareTimer);
  compareTimer = setTimeout(() => state.alert && showAlert(state.alert, { quiet: true }), 300);
}

async function showAlert(id, { pin = false, focus = false, quiet = false } = {}) {
  if (pin) $('follow').checked = false;
  const seq = ++state.alertSeq;
  const changed = state.alert !== id;
  state.alert = id;
  if (changed) {
    for (const row of alerts.rows) {
      const b = row.node.querySelector('.alert-btn');
      if (b) b.setAttribute('aria-pressed', String(row.key === id));
    }
  }
  let a;
  try {
    try {
      a = await api(`/api/alerts/${encodeURIComponent(id)}`);
    } catch (e) { // a store may be a moment behind (after a reconnection): one more look
      if (e.status !== 404) throw e;
      await new Promise((r) => setTimeout(r, 500));
      if (seq !== state.alertSeq) return;
      a = await api(`/api/alerts/${encodeURIComponent(id)}`);
    }
  } catch (e) {
    if (seq === state.alertSeq && !quiet) {
      $('compare-empty').textContent = `Alert ${id} could not be read: ${e.message}`;
      $('compare-empty').hidden = false;
      $('compare-body').hidden = true;
    }
    return;
  }
  if (seq !== state.alertSeq) return; // a newer selection won
  renderCompare(a);
  if (focus) $('compare').focus();
}

function renderCompare(a) {
  const story = a.story || {};
  const attempts = story.attempts || [];
  const order = new Map(attempts.map((t, i) => [t.attempt, `return ${i + 1}`]));
  $('compare-empty').hidden = true;
  $('compare-body').hidden = false;
  $('cmp-score').textContent = String(a.score);
  setBadge($('cmp-decision'), DETECTOR[a.decision] || a.decision, a.decision);
  $('cmp-alert').textContent = a.alert;
  $('cmp-receipt').textContent = a.receipt;
  $('cmp-customer').textContent = a.customer;
  $('cmp-amount').textContent = cents(a.amount_cents);
  const mine = attempts.find((x) => x.attempt === a.attempt);
  const outcome = mine && mine.verdict && mine.verdict.outcome;
  $('cmp-money').textContent = a.paid_before_alert ? 'refunded before the alert' : (MONEY[outcome] || outcome || '–');
  $('cmp-reasons').replaceChildren(...(a.reasons || []).map((r) => el('li', {},
    el('span', { cls: 'weight', text: `+${r.weight}` }), ' ', el('span', { text: tidy(r.text, order) }))));

  const rc = story.receipt;
  // what each store has merged of this receipt's returns: during a partition they differ, after the heal not
  const known = Object.entries(story.replicated || {}).filter(([, v]) => v.receipt || v.attempts)
    .map(([k, v]) => `${storeName(k)}: ${v.attempts} of ${attempts.length}`).join(', ');
  $('cmp-known').textContent = known || '–';
  $('cmp-purchase').replaceChildren(
    photo(rc && rc.photo && !story.purchase_photo ? PRIVATE : rc && rc.photo, PURCHASE_PHOTO, 'purchase photo'),
    el('p', { cls: 'item-sub', text: rc ? `Bought at ${storeName(rc.store)}, ${clock(rc.committed_us)}` : 'purchase not found' }),
    el('p', { cls: 'item-sub', text: rc ? rc.items.map((i) => `${i.qty} × ${i.name}`).join(', ') : '' }));
  const sides = [];
  const first = attempts[0];
  attempts.forEach((t, i) => {
    const v = t.verdict || {};
    const flagged = v.decision === 'review' || v.decision === 'block';
    const gap = first && i > 0 ? ` (+${ms((t.committed_us - first.committed_us) / 1000)})` : '';
    const seen = v.decided_us ? ` ${ms(Math.max(0, v.decided_us - t.committed_us) / 1000)} later` : '';
    const hacked = isHacked(t);
    sides.push(el('article', {
      cls: `side side-attempt ${flagged ? 'side-flagged' : v.decision ? 'side-ok' : ''}${t.attempt === a.attempt ? ' side-this' : ''}`,
      attrs: { 'aria-label': `Return ${i + 1} at store ${t.store.toUpperCase()}` },
    },
    el('h3', {}, `Return ${i + 1} · store ${t.store.toUpperCase()} `, flagged ? badge('flagged', 'block') : v.decision ? badge('allowed', 'allow') : badge('judging…', 'pending')),
    el('div', { cls: 'side-top' },
      photo(t.photo && !t.photo_urls ? PRIVATE : t.photo, PHOTO, `return photo ${i + 1}`),
      el('dl', { cls: 'facts' },
        hacked ? fact('Store said', 'not asked: the till refunded by itself') : factBadge('Store said', t.local_decision),
        factBadge('Detector', v.decision ? `${DETECTOR_SHORT[v.decision] || v.decision} ${v.score}` : 'judging…', v.decision || 'pending'),
        fact('Photo check', photoCheck(t, v.photo)))),
    el('dl', { cls: 'facts' },
      fact('Store knew', heardOf(t, attempts, order)),
      fact('Time', `${clock(t.committed_us)}${gap}${seen ? `; detector${seen}` : ''}`),
      fact('Till', hacked ? `hacked till ${t.terminal}` : `${t.terminal}${t.signed ? ' (signed)' : ' (unsigned)'}`)),
    t.attempt !== a.attempt && v.reasons && v.reasons.length
      ? el('ul', { cls: 'reasons' }, ...v.reasons.map((r) => el('li', { text: reasonText(r.code), attrs: { title: tidy(r.text, order) } }))) : null));
  });
  $('cmp-sides').replaceChildren(...sides);
}

// The photo check in words: a replay is a copy of an earlier photo, whatever its similarity.
function photoCheck(t, p) {
  if (!t.photo) return 'no photo';
  if (!p) return 'not checked yet';
  const sim = typeof p.similarity === 'number' ? ` (similarity ${p.similarity.toFixed(3)})` : '';
  if (p.replay === 'exact') return 'replayed: an exact copy of an earlier photo';
  if (p.replay) return `replayed: a ${p.replay} copy of an earlier photo`;
  if (p.rejected) return `unusable photo: ${p.rejected}`;
  if (p.verdict === 'match') return `face matches${sim}`;
  if (p.verdict === 'mismatch') return `face does not match${sim}`;
  if (p.verdict === 'review') return `face match uncertain${sim}`;
  return p.verdict || '–';
}

// What the store knew when it decided. A store records the receipt's returns it held when it
// committed one (store_had_heard_of; null for older data): the other returns it had not heard of
// were not replicated to it yet, or the link was partitioned. It refused for one it had heard of.
function heardOf(t, attempts, order) {
  const said = (t.local_reasons || []).map((x) => tidy(x, order));
  const knew = said.find((x) => /already refunded|held for review/.test(x));
  const others = attempts.filter((b) => b.attempt !== t.attempt);
  const name = (b) => `${order.get(b.attempt)} at ${storeName(b.store)}`;
  const heard = Array.isArray(t.store_had_heard_of) ? new Set(t.store_had_heard_of) : null;
  if (heard) {
    const yes = others.filter((b) => heard.has(b.attempt));
    // a later return (its store had heard of this one) is not something this store could have known
    const cameAfter = (b) => Array.isArray(b.store_had_heard_of) && b.store_had_heard_of.includes(t.attempt);
    const no = others.filter((b) => !heard.has(b.attempt) && b.store !== t.store && !cameAfter(b));
    const parts = [];
    if (yes.length) parts.push(`had heard of ${yes.map(name).join(', ')}${knew ? `, so it refused: ${knew}` : ''}`);
    if (no.length) parts.push(`had not heard of ${no.map(name).join(', ')} (not replicated to it yet, or the link was partitioned)`);
    return parts.length ? parts.join('; ') : 'no other return of this receipt';
  }
  if (knew) return `of an earlier return: ${knew}`;
  return 'not recorded by this store';
}

function fact(label, value) {
  return el('div', {}, el('dt', { text: label }), el('dd', { text: value }));
}

function factBadge(label, text, key = text) {
  return el('div', {}, el('dt', { text: label }), el('dd', {}, badge(text, key)));
}

async function loadOlder() {
  if (!state.olderBefore) return;
  const btn = $('alerts-older');
  btn.disabled = true;
  try {
    const r = await api(`/api/alerts?limit=20&before=${state.olderBefore}`);
    alerts.cap = Math.min(ALERT_CAP_MAX, alerts.rows.length + r.items.length);
    for (const a of r.items) upsertAlert({ ...a, time: a.created_us }, false);
    state.olderBefore = r.next_before;
  } catch (e) {
    say($('reset-result'), `Older alerts: ${e.message}`, 'bad');
  } finally {
    btn.disabled = false;
    btn.hidden = !state.olderBefore || alerts.rows.length >= ALERT_CAP_MAX;
  }
}

// -- live events -------------------------------------------------------------------------------------
const HANDLERS = {
  status: renderStatus,
  purchase(e) {
    addPurchase(e.store, { receipt: e.rcpt, store: e.store, customer: e.customer, amount_cents: Number(e.amount), committed_us: Number(e.c) });
    summarySoon();
  },
  return(e) {
    addReturn(e.store, {
      attempt: e.att, receipt: e.rcpt, store: e.store, customer: e.customer, amount_cents: Number(e.amount),
      photo: e.photo === '1', local_decision: e.decision, committed_us: Number(e.c),
    });
    summarySoon();
  },
  verdict(e) {
    const s = stores.get(e.store);
    if (s) s.returns.update(e.att, { verdict: { decision: e.decision, score: Number(e.score) } });
    if (state.alert && $('cmp-receipt').textContent === e.rcpt) compareSoon();
    summarySoon();
  },
  alert(e) {
    const known = alerts.byKey.get(e.alert);
    const changed = !known || known.data.decision !== e.decision;
    upsertAlert({ ...e, receipt: e.rcpt, time: e.c }, true);
    if (changed) toast({ ...e, receipt: e.rcpt, score: Number(e.score) });
    if ($('follow').checked && (!known || state.alert !== e.alert)) showAlert(e.alert);
    else if (state.alert === e.alert) compareSoon();
    summarySoon();
  },
};

const live = { es: null, retry: null, delay: 2000, last: 0, hiddenTimer: null };

function setConn(kind, text) {
  const c = $('conn');
  c.textContent = text;
  c.className = `conn conn-${kind}`;
}

function connect() {
  clearTimeout(live.retry);
  if (live.es) live.es.close();
  setConn('wait', 'Connecting…');
  const es = new EventSource('/api/events');
  live.es = es;
  live.last = Date.now();
  es.onopen = () => {
    live.delay = 2000;
    live.last = Date.now();
    setConn('live', 'Live');
    loadSnapshot(); // whatever happened while the stream was down
  };
  es.onerror = () => {
    if (es !== live.es) return;
    if (es.readyState === EventSource.CLOSED) {
      es.close();
      live.es = null;
      setConn('down', `Disconnected, retrying in ${Math.round(live.delay / 1000)} s`);
      live.retry = setTimeout(connect, live.delay);
      live.delay = Math.min(live.delay * 2, 30000);
    } else {
      setConn('wait', 'Reconnecting…');
    }
  };
  for (const [type, fn] of Object.entries(HANDLERS)) {
    es.addEventListener(type, (ev) => {
      live.last = Date.now();
      let data;
      try {
        data = JSON.parse(ev.data);
      } catch {
        return;
      }
      fn(data);
    });
  }
}

setInterval(() => { // a stream that went silent (a half-open connection) is replaced
  if (live.es && live.es.readyState === EventSource.OPEN && Date.now() - live.last > SILENCE_MS) connect();
}, 2000);

document.addEventListener('visibilitychange', () => {
  if (document.hidden) {
    live.hiddenTimer = setTimeout(() => { // nobody is watching: let the server stop reading for us
      clearTimeout(live.retry);
      if (live.es) live.es.close();
      live.es = null;
      setConn('paused', 'Paused while the tab is hidden');
    }, HIDDEN_CLOSE_MS);
  } else {
    clearTimeout(live.hiddenTimer);
    state.unseen = 0;
    document.title = 'FraudDemo';
    if (!live.es) connect();
    pump();
  }
});

// -- snapshot: what the lists show when the stream (re)opens -----------------------------------------
async function loadSnapshot() {
  const jobs = [refreshSummary(), loadAlerts(), loadHacked(), api('/api/status').then(renderStatus)];
  for (const name of stores.keys()) {
    jobs.push(api(`/api/purchases?store=${encodeURIComponent(name)}&limit=${LIST_CAP}`).then((r) => {
      for (const p of r.items.slice().reverse()) addPurchase(name, p);
    }));
    jobs.push(api(`/api/returns?store=${encodeURIComponent(name)}&limit=${LIST_CAP}`).then((r) => {
      for (const t of r.items.slice().reverse()) addReturn(name, t);
    }));
  }
  await Promise.allSettled(jobs);
}

async function loadAlerts() {
  const r = await api(`/api/alerts?limit=20`);
  for (const a of r.items.slice().reverse()) upsertAlert({ ...a, time: a.created_us }, false);
  if (state.olderBefore === null) state.olderBefore = r.next_before;
  $('alerts-older').hidden = !state.olderBefore;
  if (!state.alert && $('follow').checked && r.items.length) showAlert(r.items[0].alert);
}

async function loadHacked() {
  renderHacked((await api('/api/hacked-pos')).running);
}

// -- start -------------------------------------------------------------------------------------------
async function start() {
  alerts = new Feed($('alert-feed'), ALERT_CAP, alertRow, (f) => { $('alerts-empty').hidden = f.rows.length > 0; });
  $('btn-scenario').addEventListener('click', runScenario);
  $('btn-guide-partition').addEventListener('click', guidePartition);
  $('btn-guide-return').addEventListener('click', guideReturn);
  $('btn-guide-heal').addEventListener('click', guideHeal);
  $('btn-link').addEventListener('click', toggleLink);
  $('btn-hacked').addEventListener('click', toggleHacked);
  $('btn-reset').addEventListener('click', reset);
  $('alerts-older').addEventListener('click', loadOlder);
  $('webcam').addEventListener('change', (e) => webcam(e.target.checked));
  $('follow').addEventListener('change', (e) => {
    if (e.target.checked && alerts.rows.length) showAlert(alerts.rows[0].key);
  });
  let delay = 1000;
  for (;;) { // the service may still be starting
    try {
      const [st, cat] = await Promise.all([api('/api/stores'), api('/api/catalogue')]);
      state.catalogue = cat.items;
      Object.keys(st.stores).forEach((name, i) => storeColumn(name, i));
      document.body.dataset.stores = String(stores.size);
      $('guide').hidden = stores.size < 2; // the guided demo is about two stores and their link
      break;
    } catch (e) {
      setConn('down', `Service unavailable (${e.message}), retrying…`);
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 15000);
    }
  }
  connect();
}

start();
