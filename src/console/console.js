// The review console: plain JavaScript over the REST API. Every value that comes from the
// API is put into the page as text (text nodes, textContent, attributes through setAttribute),
// never parsed as markup. Which decisions a transaction takes comes from the API's `allowed`.
'use strict';

(function () {
  const TOKEN_KEY = 'gbds-console-token';
  const PAGE_SIZE = 20;
  /** A queue item waiting longer than this is shown as overdue. */
  const OVERDUE_MS = 24 * 3600 * 1000;
  /** The review queues, in the order they are shown. */
  const QUEUES = [
    { state: 'PENDING', title: 'Manual review', tag: 'MIR · PENDING' },
    { state: 'EXCEPTION', title: 'Exception treatment', tag: 'ETR · EXCEPTION' },
  ];
  const QUEUE_STATES = QUEUES.map((q) => q.state);
  const $ = (id) => document.getElementById(id);

  // ---- building the DOM ----------------------------------------------------------------

  /** An element with properties (class, text, on<event>, or attributes) and children. */
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === 'class') node.className = value;
      else if (key === 'text') node.textContent = String(value);
      else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? '' : String(value));
    }
    add(node, children);
    return node;
  }

  /** Appends children: nodes as they are, anything else as a text node. */
  function add(node, child) {
    if (child === undefined || child === null || child === false) return;
    if (Array.isArray(child)) {
      child.forEach((c) => add(node, c));
    } else {
      node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }

  const SVG = 'http://www.w3.org/2000/svg';
  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    add(node, children);
    return node;
  }

  /** Labels each cell with its column's heading, for the stacked layout on narrow screens. */
  function labelCells(tbody) {
    const heads = Array.from(tbody.closest('table').querySelectorAll('thead th'),
      (th) => (th.querySelector('.sr-only') ? '' : th.textContent));
    for (const row of tbody.rows) {
      Array.from(row.cells).forEach((cell, i) => {
        if (heads[i] && !cell.classList.contains('empty')) cell.setAttribute('data-label', heads[i]);
      });
    }
  }

  function emptyRow(tbody, columns, text) {
    tbody.replaceChildren(el('tr', null, el('td', { class: 'empty', colspan: columns, text })));
  }

  // ---- time ------------------------------------------------------------------------------

  const pad = (n) => String(n).padStart(2, '0');
  /** Local time as YYYY-MM-DD HH:MM:SS. */
  function when(iso) {
    if (!iso) return '—';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }
  /** How long ago, shortly: "45 s", "12 min", "3 h 5 min", "2 d 4 h". */
  function age(iso) {
    const ms = Math.max(0, Date.now() - Date.parse(iso));
    const s = Math.floor(ms / 1000);
    if (s < 60) return `${s} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} min`;
    const h = Math.floor(m / 60);
    if (h < 24) return `${h} h ${m % 60} min`;
    return `${Math.floor(h / 24)} d ${h % 24} h`;
  }
  function timeEl(iso, withAge) {
    if (!iso) return el('span', { class: 'muted', text: '—' });
    const text = withAge ? `${when(iso)} (${age(iso)} ago)` : when(iso);
    return el('time', { datetime: iso, title: iso, text });
  }
  /** A readable name for a wire name: SAME_FINGERS → "Same fingers". */
  function human(name) {
    const s = String(name).toLowerCase().replace(/_/g, ' ');
    return s.charAt(0).toUpperCase() + s.slice(1);
  }

  // ---- the API ---------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  /** Calls the API with the session's token; a refusal becomes an ApiError with its message. */
  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    const init = { method, headers, cache: 'no-store', credentials: 'omit' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, 'network', `The service did not answer (${e.message}).`);
    }
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    if (!response.ok) {
      const code = (data && data.error) || `http_${response.status}`;
      const message = (data && data.message) || `HTTP ${response.status}`;
      if (response.status === 401) refused(message);
      throw new ApiError(response.status, code, message);
    }
    return data;
  }

  /** A POST whose answer may be lost: sent again, with the same body, up to three times. */
  async function postSurely(path, body) {
    for (let attempt = 1; ; attempt++) {
      try {
        return await api('POST', path, body);
      } catch (e) {
        if (e.status !== 0 || attempt === 3) throw e;
        await new Promise((resolve) => setTimeout(resolve, 400 * attempt));
      }
    }
  }

  /** A fresh decision_id: the same one goes with every resend of one confirmed decision. */
  function newDecisionId() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return 'console-' + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  // ---- notices and the confirmation dialog ----------------------------------------------

  function notify(kind, ...parts) {
    const n = $('notice');
    n.className = `notice ${kind}`;
    n.replaceChildren();
    add(n, parts);
    n.hidden = false;
  }
  function clearNotice() {
    $('notice').hidden = true;
    $('notice').replaceChildren();
  }
  function failed(error) {
    notify('error', error instanceof ApiError ? error.message : String(error));
  }

  /**
   * Asks before acting. Resolves to { comment } when confirmed, null when cancelled
   * (Cancel, Escape). Enter confirms; Shift+Enter is a new line in the comment.
   */
  function confirmAction({ title, text, okLabel, danger, withComment }) {
    const dialog = $('confirm');
    clearNotice();
    $('confirm-title').textContent = title;
    $('confirm-text').textContent = text;
    $('confirm-comment-row').hidden = !withComment;
    $('confirm-comment').value = '';
    $('confirm-count').textContent = '0';
    const ok = $('confirm-ok');
    ok.textContent = okLabel || 'Confirm';
    ok.className = danger ? 'danger' : 'primary';
    const opener = document.activeElement;
    return new Promise((resolve) => {
      const finish = (result) => {
        dialog.removeEventListener('close', onClose);
        if (opener && opener.isConnected && typeof opener.focus === 'function') opener.focus();
        resolve(result);
      };
      const onClose = () => finish(dialog.returnValue === 'ok' ? { comment: $('confirm-comment').value } : null);
      dialog.addEventListener('close', onClose);
      dialog.returnValue = '';
      dialog.showModal();
      (withComment ? $('confirm-comment') : ok).focus();
    });
  }

  function wireDialog() {
    const dialog = $('confirm');
    $('confirm-form').addEventListener('submit', (e) => {
      e.preventDefault();
      dialog.close('ok');
    });
    $('confirm-cancel').addEventListener('click', () => dialog.close(''));
    $('confirm-comment').addEventListener('input', (e) => {
      $('confirm-count').textContent = String(e.target.value.length);
    });
    $('confirm-comment').addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        dialog.close('ok');
      }
    });
  }

  // ---- screens ---------------------------------------------------------------------------

  const SCREENS = ['login', 'queues', 'transaction', 'operator'];
  function show(screen) {
    for (const s of SCREENS) $(s).hidden = s !== screen;
    const current = { queues: 'nav-queues', transaction: 'nav-queues', operator: 'nav-operator' }[screen];
    for (const id of ['nav-queues', 'nav-operator']) {
      if (id === current) $(id).setAttribute('aria-current', 'page');
      else $(id).removeAttribute('aria-current');
    }
    $('sign-out').hidden = !sessionStorage.getItem(TOKEN_KEY);
  }

  function showLogin(message) {
    show('login');
    if (message) notify('error', message);
    $('token-input').focus();
  }

  /**
   * A 401: the token held is of no use, so it is forgotten and another asked for. Without one
   * (a first visit) the form says enough; a refused token is named as the reason.
   */
  function refused(message) {
    const had = sessionStorage.getItem(TOKEN_KEY);
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin(had ? `The service refused this token (${message}). Check it and paste it again.` : null);
  }

  /** The screen the address names: #queues, #operator or #tx/<tguid>. */
  function route() {
    const hash = location.hash.replace(/^#/, '');
    if (hash.startsWith('tx/')) {
      let tguid;
      try {
        tguid = decodeURIComponent(hash.slice(3));
      } catch (_) {
        tguid = hash.slice(3);
      }
      show('transaction');
      loadTransaction(tguid, true);
    } else if (hash === 'operator') {
      show('operator');
      loadOperator();
    } else {
      show('queues');
      loadQueues();
    }
  }

  // ---- the review queues -----------------------------------------------------------------

  /** Per queue: the cursors of the pages seen so far, and which page is shown. */
  const queues = Object.fromEntries(QUEUE_STATES.map((s) => [s, { cursors: [null], page: 0, next: null }]));

  function resetPaging() {
    for (const s of QUEUE_STATES) Object.assign(queues[s], { cursors: [null], page: 0, next: null });
  }

  async function loadQueues() {
    const operation = $('operation-filter').value;
    try {
      const counts = (await api('GET', '/v1/queues')).items;
      await Promise.all(QUEUE_STATES.map((s) => loadQueue(s, operation, counts)));
      $('queues-updated').textContent = `Updated ${when(new Date().toISOString())}`;
    } catch (e) {
      if (e.status !== 401) failed(e);
    }
  }

  async function loadQueue(state, operation, counts) {
    const box = $(`queue-${state}`);
    const part = (role) => box.querySelector(`[data-role="${role}"]`);
    const q = queues[state];
    const mine = counts.filter((c) => c.state === state && (!operation || c.operation === operation));
    const total = mine.reduce((n, c) => n + c.count, 0);
    part('count').textContent = String(total);
    part('count').setAttribute('aria-label', `${total} waiting`);
    const oldest = mine.map((c) => c.oldest_at).sort()[0];
    // An empty queue says so once, in its table.
    part('oldest').textContent = oldest ? `Longest waiting: ${age(oldest)}` : '';
    part('oldest').hidden = !oldest;

    const params = new URLSearchParams({ state, limit: String(PAGE_SIZE) });
    if (operation) params.set('operation', operation);
    if (q.cursors[q.page]) params.set('cursor', q.cursors[q.page]);
    const page = await api('GET', `/v1/transactions?${params}`);
    q.next = page.next_cursor;
    const rows = part('rows');
    rows.replaceChildren();
    for (const item of page.items) {
      const waited = Date.now() - Date.parse(item.updated_at);
      rows.appendChild(el('tr', { 'data-tguid': item.tguid },
        el('td', null, el('a', { href: `#tx/${encodeURIComponent(item.tguid)}` }, el('code', { text: item.tguid }))),
        el('td', { text: item.operation }),
        el('td', { class: waited > OVERDUE_MS ? 'old' : null },
          el('time', { datetime: item.updated_at, title: `In the queue since ${when(item.updated_at)}`, text: age(item.updated_at) }))));
    }
    if (!page.items.length) emptyRow(rows, 3, 'Nothing waiting.');
    const first = q.page * PAGE_SIZE;
    part('page').textContent = page.items.length
      ? `${first + 1}–${first + page.items.length} of ${Math.max(total, first + page.items.length)}`
      : '';
    part('prev').disabled = q.page === 0;
    part('next').disabled = !q.next;
    // One page has nothing to page through.
    part('pager').hidden = q.page === 0 && !q.next;
  }

  /** One box per queue, from the page's template. */
  function buildQueues() {
    const list = $('queue-list');
    for (const q of QUEUES) {
      const box = $('queue-template').content.firstElementChild.cloneNode(true);
      box.id = `queue-${q.state}`;
      box.dataset.state = q.state;
      const title = box.querySelector('[data-role="title"]');
      title.id = `queue-${q.state}-title`;
      title.textContent = q.title;
      box.setAttribute('aria-labelledby', title.id);
      box.querySelector('[data-role="tag"]').textContent = q.tag;
      list.appendChild(box);
    }
  }

  function wireQueues() {
    buildQueues();
    $('operation-filter').addEventListener('change', () => {
      resetPaging();
      loadQueues();
    });
    $('queues-refresh').addEventListener('click', () => {
      clearNotice();
      loadQueues();
    });
    for (const state of QUEUE_STATES) {
      const box = $(`queue-${state}`);
      const q = queues[state];
      box.querySelector('[data-role="prev"]').addEventListener('click', () => {
        q.page = Math.max(0, q.page - 1);
        loadQueues();
      });
      box.querySelector('[data-role="next"]').addEventListener('click', () => {
        if (!q.next) return;
        q.cursors[q.page + 1] = q.next;
        q.page += 1;
        loadQueues();
      });
    }
  }

  // ---- one transaction -------------------------------------------------------------------

  let shownTguid = null;

  async function loadTransaction(tguid, focus) {
    shownTguid = tguid;
    $('tx-tguid').textContent = tguid;
    let tx;
    try {
      tx = await api('GET', `/v1/transactions/${encodeURIComponent(tguid)}`);
    } catch (e) {
      if (e.status !== 401) failed(e);
      for (const id of ['tx-summary', 'decide-buttons', 'tx-transitions', 'tx-notifications']) $(id).replaceChildren();
      return;
    }
    if (shownTguid !== tguid) return;
    renderSummary(tx);
    renderDecisions(tx);
    renderTransitions(tx.transitions);
    renderNotifications(tx);
    if (focus) $('tx-title').focus();
  }

  function renderSummary(tx) {
    const rows = [
      ['Operation', tx.operation],
      ['State', el('span', { class: `state state-${tx.state}`, 'data-state': tx.state, text: tx.state })],
      ['Registered', timeEl(tx.created_at, true)],
      ['Last change', timeEl(tx.updated_at, true)],
    ];
    $('tx-summary').replaceChildren(...rows.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', null, v)]));
    $('tx-summary').setAttribute('data-tguid', tx.tguid);
  }

  function renderDecisions(tx) {
    const box = $('decide-buttons');
    box.replaceChildren();
    const offers = [
      ...tx.allowed.review.map((value) => ({ call: 'review', field: 'decision', value })),
      ...tx.allowed.treatment.map((value) => ({ call: 'treatment', field: 'treatment', value })),
    ];
    for (const offer of offers) {
      const danger = offer.value === 'REJECT';
      box.appendChild(el('button', {
        type: 'button',
        class: danger ? 'danger' : offer.value === 'APPROVE' ? 'primary' : null,
        'data-call': offer.call,
        'data-value': offer.value,
        onclick: () => decide(tx, offer),
      }, human(offer.value)));
    }
    const none = $('decide-none');
    none.hidden = offers.length > 0;
    none.textContent = `No decision is open: the transaction is ${tx.state}.`;
  }

  async function decide(tx, offer) {
    const what = offer.call === 'review' ? `${human(offer.value)} this transaction?` : `Treat this exception as ${human(offer.value)}?`;
    const answer = await confirmAction({
      title: what,
      text: `${tx.operation} transaction ${tx.tguid}, now ${tx.state}. It is recorded in the history under this token's name, with your comment, and cannot be undone.`,
      okLabel: human(offer.value),
      danger: offer.value === 'REJECT',
      withComment: true,
    });
    if (!answer) return;
    const body = { [offer.field]: offer.value, decision_id: newDecisionId() };
    if (answer.comment.trim()) body.comment = answer.comment;
    await sendDecision(tx.tguid, offer, body);
  }

  /** Sends one confirmed decision (resent with its decision_id if the answer is lost). */
  async function sendDecision(tguid, offer, body) {
    const buttons = $('decide-buttons').querySelectorAll('button');
    buttons.forEach((b) => { b.disabled = true; });
    const path = `/v1/transactions/${encodeURIComponent(tguid)}/${offer.call}`;
    try {
      const done = await postSurely(path, body);
      notify('ok', done.duplicate
        ? `This decision had already been recorded; the transaction is ${done.state}.`
        : `${human(offer.value)} recorded; the transaction is now ${done.state}.`);
    } catch (e) {
      if (e.status === 409 && e.code === 'invalid_transition') {
        notify('warn', 'Another reviewer decided first, so your decision was not recorded. ',
          `(${e.message}.) The view below shows the transaction as it is now.`);
      } else if (e.status === 0) {
        notify('error', `${e.message} Your decision may not have been recorded. `,
          el('button', { type: 'button', onclick: () => sendDecision(tguid, offer, body) }, 'Send it again'));
      } else {
        failed(e);
      }
    }
    $('notice').focus();
    await loadTransaction(tguid, false);
  }

  function renderTransitions(transitions) {
    const rows = $('tx-transitions');
    rows.replaceChildren();
    for (const t of transitions) {
      const change = t.from ? `${t.from} → ${t.to}` : `→ ${t.to}`;
      const input = [t.input];
      if (t.uguid) input.push(el('br'), el('span', { class: 'muted small', text: `uguid ${t.uguid}` }));
      if (t.event_id) input.push(el('br'), el('span', { class: 'muted small', text: `event ${t.event_id}` }));
      if (t.decision_id) input.push(el('br'), el('span', { class: 'muted small', text: `decision ${t.decision_id}` }));
      rows.appendChild(el('tr', null,
        el('td', null, timeEl(t.at)),
        el('td', { text: change }),
        el('td', null, input),
        el('td', { text: t.actor }),
        el('td', { class: 'comment', text: t.comment || '' })));
    }
    labelCells(rows);
  }

  function renderNotifications(tx) {
    const list = $('tx-notifications');
    list.replaceChildren();
    $('tx-no-notifications').hidden = tx.notifications.length > 0;
    for (const n of tx.notifications) {
      const status = n.body && n.body.status;
      const deliveries = el('div', { class: 'deliveries' });
      for (const d of n.deliveries) {
        const detail = [];
        if (d.status === 'delivered') detail.push(` at ${when(d.delivered_at)}`);
        if (d.attempts) detail.push(` · ${d.attempts} attempt${d.attempts === 1 ? '' : 's'}`);
        const last = d.status === 'delivered' ? '' : lastOutcome(d);
        if (last) detail.push(` · last: ${last}`);
        deliveries.appendChild(el('span', { 'data-endpoint': d.endpoint },
          el('b', { text: d.endpoint }), ' ', el('span', { class: `pill ${d.status}`, text: d.status }), detail.join(''),
          d.status === 'dead'
            ? [' ', el('button', { type: 'button', onclick: () => retryDelivery(d, () => loadTransaction(tx.tguid, false)) }, 'Retry')]
            : null));
      }
      if (!n.deliveries.length) deliveries.appendChild(el('span', { class: 'muted', text: 'No endpoint receives this one.' }));
      list.appendChild(el('li', { 'data-seq': n.seq },
        el('div', null, el('b', { text: `#${n.seq} ${status || ''}` }), ' ', el('span', { class: 'muted small' }, timeEl(n.created_at))),
        el('pre', { text: JSON.stringify(n.body) }),
        deliveries));
    }
  }

  // ---- operators -------------------------------------------------------------------------

  const dead = { cursors: [null], page: 0, next: null };
  let endpoints = [];

  function health(e) {
    if (!e.enabled) return 'disabled';
    if (e.failing_since) return 'failing';
    return 'healthy';
  }

  async function loadOperator() {
    try {
      endpoints = (await api('GET', '/v1/endpoints')).items;
    } catch (e) {
      if (e.status !== 401) failed(e);
      return;
    }
    drawChart(endpoints);
    renderEndpoints(endpoints);
    const select = $('dead-endpoint');
    const keep = select.value;
    select.replaceChildren(...endpoints.map((e) => el('option', { value: e.id, text: `${e.id} (${e.dead} dead)` })));
    const pick = endpoints.find((e) => e.id === keep) || endpoints.find((e) => e.dead > 0) || endpoints[0];
    if (pick) select.value = pick.id;
    if (pick && pick.id !== keep) Object.assign(dead, { cursors: [null], page: 0, next: null });
    $('operator-updated').textContent = `Updated ${when(new Date().toISOString())}`;
    await loadDead();
  }

  /**
   * Backlog and dead deliveries per endpoint as bars, with a dot for its health; drawn at the
   * width of its box (on a narrow one, each endpoint's name sits above its bar).
   */
  function drawChart(items) {
    const box = $('health-chart');
    if (!items.length) {
      box.replaceChildren(el('p', { class: 'muted', text: 'No endpoint is configured.' }));
      return;
    }
    const width = Math.max(260, Math.floor(box.clientWidth || 760));
    const narrow = width < 560;
    const row = narrow ? 46 : 30;
    const labelW = narrow ? 0 : Math.min(220, Math.floor(width * 0.25));
    const valueW = narrow ? 0 : 180;
    const barW = width - labelW - valueW;
    const nameChars = Math.max(8, Math.floor(((narrow ? width - 150 : labelW) - 24) / 8));
    const max = Math.max(1, ...items.map((e) => e.backlog + e.dead));
    const chart = svg('svg', {
      width, height: 8 + row * items.length, viewBox: `0 0 ${width} ${8 + row * items.length}`, role: 'img',
      'aria-label': items.map((e) => `${e.id}: ${health(e)}, ${e.backlog} waiting, ${e.dead} dead`).join('; '),
    });
    items.forEach((e, i) => {
      const y = 4 + i * row;
      const w = (n) => (n / max) * barW;
      const name = e.id.length > nameChars ? `${e.id.slice(0, nameChars - 1)}…` : e.id;
      const value = `${e.backlog} waiting · ${e.dead} dead`;
      const textY = narrow ? y + 15 : y + row / 2 + 4;
      const barY = narrow ? y + 22 : y + 7;
      const barH = narrow ? 14 : row - 14;
      chart.appendChild(svg('g', { 'data-endpoint': e.id },
        svg('title', null, `${e.id}: ${health(e)}; ${value}`),
        svg('circle', { cx: 7, cy: textY - 4, r: 6, class: health(e) }),
        svg('text', { x: 19, y: textY }, name),
        svg('line', { x1: labelW, x2: labelW, y1: barY - 3, y2: barY + barH + 3, class: 'axis' }),
        svg('rect', { x: labelW, y: barY, width: w(e.backlog), height: barH, class: 'backlog' }),
        svg('rect', { x: labelW + w(e.backlog), y: barY, width: w(e.dead), height: barH, class: 'dead' }),
        narrow
          ? svg('text', { x: width, y: textY, 'text-anchor': 'end' }, value)
          : svg('text', { x: labelW + w(e.backlog + e.dead) + 6, y: textY }, value)));
    });
    box.replaceChildren(chart, el('div', { class: 'legend' },
      el('span', null, el('span', { class: 'swatch backlog' }), 'waiting'),
      el('span', null, el('span', { class: 'swatch dead' }), 'dead'),
      el('span', { text: 'dot: green healthy · amber failing · grey disabled' })));
  }

  function renderEndpoints(items) {
    const rows = $('endpoint-rows');
    rows.replaceChildren();
    for (const e of items) {
      const state = health(e);
      rows.appendChild(el('tr', { 'data-endpoint': e.id },
        el('td', null, el('code', { text: e.id }), el('br'), el('span', { class: 'muted small', text: e.url })),
        el('td', null, el('span', { class: `pill ${state}`, text: state }),
          e.disabled_reason ? [el('br'), el('span', { class: 'muted small', text: e.disabled_reason })] : null,
          e.active ? null : [el('br'), el('span', { class: 'muted small', text: 'no longer configured' })]),
        el('td', { text: e.backlog }),
        el('td', { text: e.dead }),
        el('td', null, e.failing_since ? timeEl(e.failing_since, true) : '—'),
        el('td', null, e.last_delivered_at ? timeEl(e.last_delivered_at, true) : 'never')));
    }
    if (!items.length) emptyRow(rows, 6, 'No endpoint.');
    labelCells(rows);
  }

  /**
   * A delivery's last failed attempt in words. The error usually names the status already
   * ("HTTP 500", "410 Gone: ..."), so the status is added only when it does not.
   */
  function lastOutcome(d) {
    const status = d.last_status === null || d.last_status === undefined ? null : String(d.last_status);
    const error = d.last_error || null;
    if (error && (status === null || error.includes(status))) return error;
    if (status === null) return '';
    return error ? `HTTP ${status}: ${error}` : `HTTP ${status}`;
  }

  async function loadDead() {
    const endpoint = $('dead-endpoint').value;
    const rows = $('dead-rows');
    if (!endpoint) {
      rows.replaceChildren();
      $('dead-table').hidden = true;
      return;
    }
    const params = new URLSearchParams({ status: 'dead', endpoint, limit: String(PAGE_SIZE) });
    if (dead.cursors[dead.page]) params.set('cursor', dead.cursors[dead.page]);
    let page;
    try {
      page = await api('GET', `/v1/deliveries?${params}`);
    } catch (e) {
      if (e.status !== 401) failed(e);
      return;
    }
    dead.next = page.next_cursor;
    rows.replaceChildren();
    for (const d of page.items) {
      rows.appendChild(el('tr', { 'data-delivery': d.id },
        el('td', null, el('a', { href: `#tx/${encodeURIComponent(d.tguid)}` }, el('code', { text: d.tguid }))),
        el('td', { text: d.seq }),
        el('td', { text: d.attempts }),
        el('td', { text: lastOutcome(d) || '—' }),
        el('td', null, timeEl(d.last_attempt_at)),
        el('td', null, el('button', { type: 'button', onclick: () => retryDelivery(d, loadOperator) }, 'Retry'))));
    }
    $('dead-none').hidden = page.items.length > 0;
    // Column headings over no rows read as a table that failed to load.
    $('dead-table').hidden = page.items.length === 0;
    labelCells(rows);
    $('dead-page').textContent = `page ${dead.page + 1}`;
    $('dead-prev').disabled = dead.page === 0;
    $('dead-next').disabled = !dead.next;
    $('dead-pager').hidden = dead.page === 0 && !dead.next;
  }

  async function retryDelivery(d, then) {
    const answer = await confirmAction({
      title: 'Send this delivery again?',
      text: `Notification #${d.seq} of ${d.tguid || 'this transaction'} to ${d.endpoint}, with its attempts reset and in its place in the order.`,
      okLabel: 'Retry',
    });
    if (!answer) return;
    try {
      await api('POST', `/v1/deliveries/${encodeURIComponent(d.id)}/retry`);
      notify('ok', `Delivery to ${d.endpoint} queued again.`);
    } catch (e) {
      failed(e);
    }
    await then();
  }

  function wireOperator() {
    // Recovery looks back a day unless the operator says otherwise.
    const dayAgo = new Date(Date.now() - 24 * 3600 * 1000);
    $('recover-since').value = `${when(dayAgo.toISOString()).replace(' ', 'T')}`;
    $('operator-refresh').addEventListener('click', () => {
      clearNotice();
      loadOperator();
    });
    $('dead-endpoint').addEventListener('change', () => {
      Object.assign(dead, { cursors: [null], page: 0, next: null });
      loadDead();
    });
    $('dead-prev').addEventListener('click', () => {
      dead.page = Math.max(0, dead.page - 1);
      loadDead();
    });
    $('dead-next').addEventListener('click', () => {
      if (!dead.next) return;
      dead.cursors[dead.page + 1] = dead.next;
      dead.page += 1;
      loadDead();
    });
    $('recover-form').addEventListener('submit', async (e) => {
      e.preventDefault();
      const endpoint = $('dead-endpoint').value;
      const since = new Date($('recover-since').value);
      if (!endpoint || Number.isNaN(since.getTime())) {
        notify('error', 'Choose an endpoint and a time first.');
        return;
      }
      const answer = await confirmAction({
        title: `Recover ${endpoint}?`,
        text: `Every delivery to ${endpoint} that went dead at or after ${when(since.toISOString())} is sent again, in order.`,
        okLabel: 'Recover',
      });
      if (!answer) return;
      try {
        const done = await api('POST', `/v1/endpoints/${encodeURIComponent(endpoint)}/recover`, { since: since.toISOString() });
        notify('ok', `${done.affected} deliver${done.affected === 1 ? 'y' : 'ies'} to ${endpoint} queued again.`);
      } catch (err) {
        failed(err);
      }
      await loadOperator();
    });
  }

  // ---- start -----------------------------------------------------------------------------

  /**
   * A token in the address (#token=…, or #tx/…&token=…) is kept for this tab and removed from
   * the address; the screen the rest of the address names is shown.
   */
  function takeTokenFromAddress() {
    const match = /(?:^#|&)token=([^&]*)/.exec(location.hash);
    if (!match) return;
    const rest = location.hash.replace(match[0], '').replace(/^#?&?/, '');
    let token = match[1];
    try {
      token = decodeURIComponent(token);
    } catch (_) {
      // kept as written
    }
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    history.replaceState(null, '', `${location.pathname}${location.search}#${rest || 'queues'}`);
  }

  function start() {
    takeTokenFromAddress();
    wireDialog();
    wireQueues();
    wireOperator();
    $('login-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const token = $('token-input').value.trim();
      if (!token) return;
      sessionStorage.setItem(TOKEN_KEY, token);
      $('token-input').value = '';
      clearNotice();
      route();
    });
    $('sign-out').addEventListener('click', () => {
      sessionStorage.removeItem(TOKEN_KEY);
      clearNotice();
      showLogin();
    });
    $('tx-refresh').addEventListener('click', () => {
      clearNotice();
      if (shownTguid !== null) loadTransaction(shownTguid, false);
    });
    let redraw = 0;
    window.addEventListener('resize', () => {
      cancelAnimationFrame(redraw);
      redraw = requestAnimationFrame(() => {
        if (!$('operator').hidden && endpoints.length) drawChart(endpoints);
      });
    });
    window.addEventListener('hashchange', () => {
      clearNotice();
      route();
    });
    route();
  }

  start();
})();
