// skingpt web app: plain JavaScript, no framework, no network but this server.
// Every piece of data is put on the page with textContent (never as HTML).
'use strict';

const T = {
  en: {
    title: 'skingpt', new: 'New consultation', cases: 'Cases', apiKey: 'API key',
    banner: 'Runs on this machine only. Every report is a draft for a clinician, never a diagnosis.',
    drop: 'Drop a photo here', choose: 'Choose photo', camera: 'Take photo', patient: 'Patient (optional)',
    age: 'Age', sex: 'Sex', female: 'female', male: 'male', other: 'other', site: 'Body site', history: 'History',
    assess: 'Assess', working: 'The model is working… this can take a few minutes.',
    differential: 'Possible conditions', findings: 'Findings', answers: "The model's answers", next: 'Next steps',
    followup: 'Follow-up questions', ask: 'Ask', review: 'Clinician review', confirm: 'Confirm the first candidate',
    correct: 'Correct the diagnosis', notes: 'Notes', reviewer: 'Your name', saveReview: 'Record review',
    print: 'Print', export: 'Export JSON', exportFhir: 'Export FHIR', delete: 'Delete case', search: 'Search', searchHint: 'site, condition, notes, case id',
    date: 'Date', top: 'First candidate', statusCol: 'Status', noCases: 'No cases.', keyNeeded: 'This server needs an API key.',
    ok: 'OK', draft: 'draft', reviewed: 'reviewed', notAssessed: 'photo refused', measured: 'Measured',
    quality: 'Photo quality', qok: 'Photo quality is good enough.', qwarn: 'Photo quality is borderline:',
    qrefuse: 'This photo cannot be assessed:', confirmDelete: 'Delete this case and everything recorded for it? This cannot be undone.',
    deleted: 'The case was deleted.', busyRetry: 'The model is busy; please try again in a moment.',
    caseOf: 'Case', created: 'created', reviewSaved: 'Review recorded.', noAnswer: '(no answer)',
    scoredFirst: "The model's scores were read where its first answer names the diagnosis (before calibration, which can change their order).",
    scoredQuestion: 'The scores are the model\'s answer to "What skin disease is shown in this image?" (its first answer names no diagnosis in the expected form).',
  },
  ja: {
    title: 'skingpt', new: '新しい相談', cases: '症例一覧', apiKey: 'APIキー',
    banner: 'このコンピューターの中だけで動作します。すべての報告は臨床医のための下書きであり、診断ではありません。',
    drop: 'ここに写真をドロップ', choose: '写真を選ぶ', camera: '写真を撮る', patient: '患者情報（任意）',
    age: '年齢', sex: '性別', female: '女性', male: '男性', other: 'その他', site: '部位', history: '経過',
    assess: '評価する', working: 'モデルが処理中です…数分かかることがあります。',
    differential: '考えられる疾患', findings: '所見', answers: 'モデルの回答', next: '次のステップ',
    followup: '追加の質問', ask: '質問', review: '臨床医のレビュー', confirm: '第一候補を確認',
    correct: '診断を訂正', notes: 'メモ', reviewer: '氏名', saveReview: 'レビューを記録',
    print: '印刷', export: 'JSONを書き出す', exportFhir: 'FHIRを書き出す', delete: '症例を削除', search: '検索', searchHint: '部位・疾患・メモ・症例ID',
    date: '日付', top: '第一候補', statusCol: '状態', noCases: '症例はありません。', keyNeeded: 'このサーバーにはAPIキーが必要です。',
    ok: 'OK', draft: '下書き', reviewed: 'レビュー済み', notAssessed: '写真不可', measured: '計測値',
    quality: '写真の品質', qok: '写真の品質は十分です。', qwarn: '写真の品質がぎりぎりです：',
    qrefuse: 'この写真は評価できません：', confirmDelete: 'この症例と記録をすべて削除しますか？元に戻せません。',
    deleted: '症例を削除しました。', busyRetry: 'モデルが混み合っています。少し待ってから再試行してください。',
    caseOf: '症例', created: '作成', reviewSaved: 'レビューを記録しました。', noAnswer: '（回答なし）',
    scoredFirst: 'モデルのスコアは、最初の回答が診断名を述べる箇所で読み取ったものです（較正前。較正で順位が変わることがあります）。',
    scoredQuestion: 'スコアは「この画像に写っている皮膚疾患は何ですか？」への回答としての尤度です（最初の回答が所定の形で診断名を述べていません）。',
  },
};

let lang = localStorage.getItem('skingpt.lang') === 'ja' ? 'ja' : 'en';
let apiKey = sessionStorage.getItem('skingpt.key') || '';
let photo = null;           // the File chosen for a new consultation
let current = null;         // the case shown
let conditions = [];        // the catalogue, for the review form
let photoUrl = null;

const $ = (id) => document.getElementById(id);
const t = (k) => (T[lang] && T[lang][k]) || T.en[k] || k;
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}
function show(id, on) { $(id).classList.toggle('hidden', !on); }
function pct(p) { return (100 * p).toFixed(p >= 0.095 ? 0 : 1) + '%'; }

function applyLanguage() {
  document.documentElement.lang = lang;
  for (const e of document.querySelectorAll('[data-i18n]')) e.textContent = t(e.dataset.i18n);
  for (const e of document.querySelectorAll('[data-i18n-placeholder]')) e.placeholder = t(e.dataset.i18nPlaceholder);
  $('lang-en').classList.toggle('active', lang === 'en');
  $('lang-ja').classList.toggle('active', lang === 'ja');
  fillConditions();
}

// ---------------------------------------------------------------- HTTP

class HttpError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

let keyPrompt = null;  // one dialog for every request that met a 401
function askKey() {
  if (keyPrompt) return keyPrompt;
  keyPrompt = (async () => {
    const d = $('key-dialog');
    $('key-input').value = '';
    d.showModal();
    await new Promise((resolve) => d.addEventListener('close', resolve, { once: true }));
    apiKey = $('key-input').value.trim();
    sessionStorage.setItem('skingpt.key', apiKey);
    show('key-btn', true);
  })();
  keyPrompt.finally(() => { keyPrompt = null; });
  return keyPrompt;
}

async function api(method, path, body, retry = true) {
  const headers = {};
  if (apiKey) headers.Authorization = 'Bearer ' + apiKey;
  let payload = body;
  if (body && !(body instanceof FormData)) {
    headers['Content-Type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  const res = await fetch(path, { method, headers, body: payload });
  if (res.status === 401 && retry) {
    await askKey();
    return api(method, path, body, false);
  }
  if (!res.ok) {
    let msg = res.status === 429 ? t('busyRetry') : res.statusText;
    try { const j = await res.json(); if (j.error && j.error.message && res.status !== 429) msg = j.error.message; } catch (_) { /* not JSON */ }
    throw new HttpError(res.status, msg);
  }
  return res;
}
async function apiJson(method, path, body) { return (await api(method, path, body)).json(); }

// Reads a server-sent-event stream; calls onEvent with each parsed data payload.
async function readEvents(res, onEvent) {
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      for (const line of block.split('\n')) {
        if (!line.startsWith('data: ')) continue;
        const data = line.slice(6);
        if (data === '[DONE]') return;
        onEvent(JSON.parse(data));
      }
    }
  }
}

function showError(e) {
  $('error').textContent = e.message || String(e);
  show('error', true);
}

// ---------------------------------------------------------------- views

function view(name) {
  for (const v of ['new', 'case', 'cases']) show('view-' + v, v === name);
  $('nav-new').classList.toggle('active', name === 'new');
  $('nav-cases').classList.toggle('active', name === 'cases');
  if (name === 'cases') loadCases();
}

// ---------------------------------------------------------------- new consultation

function uploadForm() {
  const f = new FormData();
  f.append('image', photo, photo.name || 'photo.jpg');
  f.append('language', lang);
  for (const k of ['age', 'sex', 'site', 'history']) {
    const v = $(k).value.trim();
    if (v) f.append(k, v);
  }
  return f;
}

async function choosePhoto(file) {
  if (!file) return;
  photo = file;
  show('error', false);
  const p = $('preview');
  if (photoUrl) URL.revokeObjectURL(photoUrl);
  photoUrl = URL.createObjectURL(file);
  p.src = photoUrl;
  show('preview', true);
  $('submit').disabled = false;
  // Immediate feedback on the photo, without the model.
  const q = $('quality');
  q.className = 'quality';
  q.textContent = '…';
  try {
    const r = await apiJson('POST', '/api/quality', uploadForm());
    renderQuality(q, r.quality);
    $('submit').disabled = r.quality.verdict === 'refuse';
  } catch (e) {
    q.className = 'quality refuse';
    q.textContent = e.message;
    $('submit').disabled = true;
  }
}

function renderQuality(box, q) {
  box.replaceChildren();
  const v = q.verdict === 'refuse' ? 'refuse' : q.verdict === 'warn' ? 'warn' : 'ok';
  box.className = 'quality ' + v;
  box.append(el('strong', '', v === 'ok' ? t('qok') : v === 'warn' ? t('qwarn') : t('qrefuse')));
  if (q.advice && q.advice.length) {
    const ul = el('ul');
    for (const a of q.advice) ul.append(el('li', '', a));
    box.append(ul);
  }
}

async function submitConsultation(ev) {
  ev.preventDefault();
  if (!photo) return;
  show('error', false);
  $('submit').disabled = true;
  show('busy', true);
  try {
    const r = await apiJson('POST', '/api/consultations', uploadForm());
    await openCase(r.case_id, r);
  } catch (e) {
    showError(e);
  } finally {
    $('submit').disabled = false;
    show('busy', false);
  }
}

// ---------------------------------------------------------------- a case

async function openCase(id, report) {
  current = report || (await apiJson('GET', '/api/consultations/' + id));
  renderCase(current);
  view('case');
  try {
    const blob = await (await api('GET', '/api/consultations/' + id + '/image')).blob();
    const img = $('case-photo');
    if (img.dataset.url) URL.revokeObjectURL(img.dataset.url);
    img.dataset.url = URL.createObjectURL(blob);
    img.src = img.dataset.url;
  } catch (_) { /* the report stands without the photo */ }
}

function renderCase(r) {
  const st = $('status');
  st.textContent = r.status_text;
  st.className = 'status' + (r.status === 'reviewed' ? ' reviewed' : '');
  const p = r.patient || {};
  const bits = [t('caseOf') + ' ' + r.case_id.slice(0, 8), t('created') + ' ' + (r.case_created || '')];
  if (p.age !== null && p.age !== undefined) bits.push(t('age') + ' ' + p.age);
  if (p.sex) bits.push(p.sex);
  if (p.site) bits.push(p.site);
  $('case-meta').textContent = bits.join(' · ');

  const rf = r.red_flags || {};
  $('redflags').textContent = rf.refer_urgently ? '⚠ ' + rf.text : '';
  show('redflags', !!rf.refer_urgently);
  const d = r.differential;
  $('uncertainty').textContent = d && d.uncertain ? d.uncertainty_text : '';
  show('uncertainty', !!(d && d.uncertain));
  const refused = $('refused');
  if (!r.assessed) renderQuality(refused, r.quality);
  show('refused', !r.assessed);

  const ol = $('diff');
  ol.replaceChildren();
  if (d) {
    for (const c of d.candidates) {
      const li = el('li', c.red_flag ? 'flag' : '');
      li.append(el('span', 'name', c.name));
      const bar = el('span', 'bar');
      const fill = el('span');
      fill.style.width = Math.max(0.5, 100 * c.probability).toFixed(1) + '%';
      bar.append(fill);
      li.append(bar, el('span', 'pct', pct(c.probability)));
      li.title = c.likelihood_words || '';
      ol.append(li);
    }
  }
  // Reports made before scored_at existed do not have it: nothing is shown.
  const at = d && d.scored_at;
  $('scored-at').textContent = at === 'first_answer' ? t('scoredFirst') : at === 'score_question' ? t('scoredQuestion') : '';
  show('scored-at', !!at);
  const f = $('findings');
  f.replaceChildren();
  const fd = r.findings || {};
  if (fd.model_description) f.append(el('p', '', fd.model_description));
  if (fd.description_names && fd.description_names.note) f.append(el('p', 'warn', fd.description_names.note));
  if (fd.measured && fd.measured.summary) f.append(el('p', 'meta', t('measured') + ': ' + fd.measured.summary));
  const q = r.quality || {};
  if (q.verdict && r.assessed) f.append(el('p', 'meta', t('quality') + ': ' + q.verdict));

  const dl = $('answers');
  dl.replaceChildren();
  for (const a of r.model_answers || []) {
    dl.append(el('dt', '', a.question), a.answer ? el('dd', '', a.answer) : el('dd', 'empty', t('noAnswer')));
  }
  const nx = $('next');
  nx.replaceChildren();
  for (const s of r.next_steps || []) nx.append(el('li', '', s));
  $('disclaimer').textContent = r.disclaimer || '';

  const chat = $('chat');
  chat.replaceChildren();
  for (const m of r.messages || []) chat.append(el('div', 'msg ' + m.role, m.content));

  fillConditions();
  if (r.review) {
    $('review-name').value = r.review.reviewer;
    $('review-notes').value = r.review.notes;
  } else {
    $('review-notes').value = '';
  }
}

function fillConditions() {
  const s = $('review-dx');
  const keep = s.value;
  s.replaceChildren();
  for (const c of conditions) {
    const o = el('option', '', c.name[lang] || c.name.en);
    o.value = c.id;
    s.append(o);
  }
  if (keep) s.value = keep;
  else if (current && current.review) s.value = current.review.diagnosis_id;
}

async function sendFollowUp(ev) {
  ev.preventDefault();
  const input = $('chat-input');
  const q = input.value.trim();
  if (!q || !current) return;
  input.value = '';
  const chat = $('chat');
  chat.append(el('div', 'msg user', q));
  const ans = el('div', 'msg assistant', '…');
  chat.append(ans);
  let text = '';
  try {
    const res = await api('POST', '/api/consultations/' + current.case_id + '/messages', { content: q, stream: true });
    await readEvents(res, (e) => {
      if (e.error) throw new HttpError(e.error.code, e.error.message);
      if (e.delta) { text += e.delta; ans.textContent = text; }
      if (e.done) ans.textContent = e.answer;
    });
    current = await apiJson('GET', '/api/consultations/' + current.case_id);
  } catch (e) {
    ans.textContent = '⚠ ' + e.message;
    ans.classList.add('error');
  }
}

async function saveReview(ev) {
  ev.preventDefault();
  const decision = document.querySelector('input[name=decision]:checked').value;
  const body = { decision, reviewer: $('review-name').value.trim(), notes: $('review-notes').value.trim() };
  if (decision === 'correct') body.diagnosis_id = $('review-dx').value;
  try {
    current = await apiJson('POST', '/api/consultations/' + current.case_id + '/review', body);
    renderCase(current);
    alert(t('reviewSaved'));
  } catch (e) {
    alert(e.message);
  }
}

async function deleteCase() {
  if (!current || !confirm(t('confirmDelete'))) return;
  try {
    await api('DELETE', '/api/consultations/' + current.case_id);
    current = null;
    alert(t('deleted'));
    view('cases');
  } catch (e) {
    alert(e.message);
  }
}

function download(name, text, type) {
  const blob = new Blob([text], { type });
  const a = el('a');
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}
function exportJson() {
  if (current) download('skingpt-case-' + current.case_id + '.json', JSON.stringify(current, null, 2), 'application/json');
}
// The server renders the printable report (photo inlined, a signature block
// while it is a draft); it is printed from a hidden frame, so the API key
// travels with the fetch and the page stays under this origin's CSP.
async function printReport() {
  if (!current) return;
  try {
    const html = await (await api('GET', '/api/consultations/' + current.case_id + '/print')).text();
    let frame = $('print-frame');
    if (!frame) {
      frame = document.createElement('iframe');
      frame.id = 'print-frame';
      frame.className = 'print-frame';
      frame.title = 'print';
      document.body.appendChild(frame);
    }
    frame.onload = () => frame.contentWindow.print();
    frame.srcdoc = html;
  } catch (e) {
    alert(e.message);
  }
}

async function exportFhir() {
  if (!current) return;
  try {
    const f = await apiJson('GET', '/api/consultations/' + current.case_id + '/fhir');
    download('skingpt-case-' + current.case_id + '.fhir.json', JSON.stringify(f, null, 2), 'application/fhir+json');
  } catch (e) {
    alert(e.message);
  }
}

// ---------------------------------------------------------------- case list

async function loadCases(ev) {
  if (ev) ev.preventDefault();
  const q = $('search').value.trim();
  try {
    const r = await apiJson('GET', '/api/consultations?limit=200' + (q ? '&q=' + encodeURIComponent(q) : ''));
    const tb = $('case-rows');
    tb.replaceChildren();
    for (const c of r.cases) {
      const tr = el('tr');
      const top = c.top ? c.top.name + ' (' + pct(c.top.probability) + ')' : t('notAssessed');
      tr.append(el('td', '', c.created.replace('T', ' ').replace('Z', '')), el('td', '', top), el('td', '', c.site),
        el('td', '', t(c.status)));
      tr.addEventListener('click', () => openCase(c.case_id).catch(showError));
      tb.append(tr);
    }
    show('no-cases', r.cases.length === 0);
  } catch (e) {
    showError(e);
  }
}

// ---------------------------------------------------------------- wiring

function init() {
  applyLanguage();
  show('key-btn', !!apiKey);
  $('lang-en').addEventListener('click', () => { lang = 'en'; localStorage.setItem('skingpt.lang', lang); applyLanguage(); });
  $('lang-ja').addEventListener('click', () => { lang = 'ja'; localStorage.setItem('skingpt.lang', lang); applyLanguage(); });
  $('key-btn').addEventListener('click', askKey);
  $('nav-new').addEventListener('click', () => view('new'));
  $('nav-cases').addEventListener('click', () => view('cases'));
  $('file').addEventListener('change', (e) => choosePhoto(e.target.files[0]));
  $('camera').addEventListener('change', (e) => choosePhoto(e.target.files[0]));
  const drop = $('drop');
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    if (e.dataTransfer.files.length) choosePhoto(e.dataTransfer.files[0]);
  });
  $('upload-form').addEventListener('submit', submitConsultation);
  $('chat-form').addEventListener('submit', sendFollowUp);
  $('review-form').addEventListener('submit', saveReview);
  $('search-form').addEventListener('submit', loadCases);
  $('print').addEventListener('click', printReport);
  $('export').addEventListener('click', exportJson);
  $('export-fhir').addEventListener('click', exportFhir);
  $('delete').addEventListener('click', deleteCase);
  apiJson('GET', '/api/conditions').then((r) => { conditions = r.conditions; fillConditions(); }).catch(() => {});
}

document.addEventListener('DOMContentLoaded', init);
