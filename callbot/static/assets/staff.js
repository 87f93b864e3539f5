// Shared by the staff pages: who is signed in, the JSON API with the CSRF token, the top bar.
'use strict';
const Staff = {
  me: null, csrf: '',
  async init() {
    const r = await fetch('/auth/me', {credentials: 'same-origin'});
    if (r.status === 401) { location.href = '/login?next=' + encodeURIComponent(location.pathname + location.hash); throw new Error('signed out'); }
    this.me = await r.json(); this.csrf = this.me.csrf_token || '';
    this.bar(); return this.me;
  },
  can(permission) { return !!this.me && this.me.permissions.includes(permission); },
  // One key per action: a write is resent with the same key after a 502/503/504, a 409 (still running) or a lost
  // connection, and the server answers it once (callbot/auth/idempotency.py).
  newKey() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    const b = new Uint8Array(16); crypto.getRandomValues(b); return Array.from(b, x => x.toString(16).padStart(2, '0')).join('');
  },
  async api(path, options = {}) {
    const headers = Object.assign({'X-CSRF-Token': this.csrf}, options.headers || {});
    if (!(options.body instanceof FormData)) headers['Content-Type'] = 'application/json';
    const method = (options.method || 'GET').toUpperCase();
    const write = !['GET', 'HEAD', 'OPTIONS'].includes(method);
    if (write && !headers['Idempotency-Key']) headers['Idempotency-Key'] = this.newKey();
    const send = () => fetch(path, Object.assign({credentials: 'same-origin'}, options, {headers}));
    let r = null;
    for (const wait of write ? [500, 1000, 2000, 4000, 0] : [0]) {
      try { r = await send(); } catch (e) { if (!wait) throw e; r = null; }
      if (r && ![409, 502, 503, 504].includes(r.status)) break;
      if (r && r.status === 409 && !r.headers.get('Retry-After')) break;  // a conflict of the app's own, not a key still running
      if (wait) await new Promise(ok => setTimeout(ok, wait));
    }
    if (r.status === 401) { location.href = '/login?next=' + encodeURIComponent(location.pathname); throw new Error('请重新登录'); }
    const type = r.headers.get('content-type') || '';
    const body = type.includes('json') ? await r.json() : await r.text();
    if (!r.ok) throw new Error((body && body.error) || ('HTTP ' + r.status));
    return body;
  },
  bar() {
    const links = [['/admin', '控制台', 'kb_read'], ['/desk', '坐席工作台', 'desk'], ['/admin/users', '用户与审计', 'users']];
    const bar = document.createElement('header'); bar.id = 'staff-bar';
    bar.innerHTML = '<b>callbot</b><span class="links"></span><span id="who"></span><button id="logout" type="button">退出登录</button>';
    links.filter(l => this.can(l[2])).forEach(([href, text]) => { const a = document.createElement('a'); a.href = href; a.textContent = text;
      if (location.pathname === href) a.className = 'on'; bar.querySelector('.links').appendChild(a); });
    bar.querySelector('#who').textContent = `${this.me.user.display_name || this.me.user.username}（${this.me.user.role}）`;
    bar.querySelector('#logout').onclick = async () => { await this.api('/auth/logout', {method: 'POST'}).catch(() => null); location.href = '/login'; };
    document.body.prepend(bar);
  },
  // Text always goes in with textContent: nothing a customer or an editor typed is ever parsed as HTML.
  cell(tr, text) { const td = document.createElement('td'); td.textContent = text == null ? '' : String(text); tr.appendChild(td); return td; },
};
