/* callbot chat widget: one script tag embeds it in any page.
 *
 *   <script src="https://bot.example.com/widget.js" data-server="https://bot.example.com" data-lang="zh"
 *           data-title="XX证券 · 智能客服" async></script>
 *
 * data-server   where the web app runs (default: where this script came from)
 * data-lang     zh | en (default: the browser's language)
 * data-title    the panel's title;  data-mode="fullpage" opens it over the whole window (the /chat page)
 *
 * It talks to the server over socket.io with Rasa's channel events (session_request / session_confirm,
 * user_uttered / bot_uttered), as rasa-webchat does, and falls back to the REST channel (POST /chat/send)
 * when socket.io cannot connect. Everything lives in a shadow root: the page's CSS does not reach in and
 * the widget's CSS does not leak out. Every text is inserted as text, never parsed as HTML.
 */
(function () {
  'use strict';
  const script = document.currentScript || document.querySelector('script[src*="widget.js"]');
  const data = (script && script.dataset) || {};
  const server = (data.server || new URL(script ? script.src : location.href, location.href).origin).replace(/\/$/, '');
  const lang = (data.lang || navigator.language || 'zh').toLowerCase().startsWith('en') ? 'en' : 'zh';
  const fullpage = data.mode === 'fullpage';
  const T = {
    zh: {title: '智能客服', open: '在线客服', close: '关闭', placeholder: '请输入您的问题，例如：怎么开户？', send: '发送',
         waiting: '已为您转入人工客服队列，工作人员会尽快与您联系。', active: '人工客服{name}已接入，为您服务。',
         closed: '人工客服已结束本次服务，智能客服继续为您服务。', agent: '人工客服', offline: '无法连接客服服务器，正在重试…',
         online: '已重新连接。', failed: '消息发送失败，正在重试…', busy: '系统暂时繁忙，请稍后再试。'},
    en: {title: 'Customer service', open: 'Chat with us', close: 'Close', placeholder: 'Type your question, e.g. how to open an account',
         send: 'Send', waiting: 'You are in the queue for a human agent; someone will be with you shortly.',
         active: 'Agent {name} has joined the chat.', closed: 'The agent has left; the assistant will help you again.',
         agent: 'Agent', offline: 'Cannot reach the service, retrying…', online: 'Connected again.',
         failed: 'Sending failed, retrying…', busy: 'The system is busy, please try again later.'},
  }[lang];
  const KEY = 'callbot_session_id';
  let sessionId = localStorage.getItem(KEY);
  if (!sessionId || !/^[A-Za-z0-9_-]{8,64}$/.test(sessionId)) {
    const rnd = (crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2) + Date.now()).replace(/[^A-Za-z0-9]/g, '');
    sessionId = 'web-' + rnd.slice(0, 32);
    localStorage.setItem(KEY, sessionId);
  }

  // ------------------------------------------------------------------ DOM (in a shadow root)
  const host = document.createElement('div');
  host.id = 'callbot-widget';
  host.style.cssText = 'all:initial;position:fixed;z-index:2147483000;' + (fullpage ? 'inset:0' : 'right:20px;bottom:20px');
  const root = host.attachShadow({mode: 'open'});
  root.innerHTML = `<style>
    :host{all:initial}*{box-sizing:border-box;font-family:"WenQuanYi Micro Hei","PingFang SC","Microsoft YaHei",sans-serif}
    .launcher{width:60px;height:60px;border-radius:50%;border:0;background:#c8102e;color:#fff;font-size:13px;cursor:pointer;box-shadow:0 4px 12px #0004}
    .panel{position:absolute;right:0;bottom:72px;width:min(380px,calc(100vw - 24px));height:min(600px,calc(100vh - 110px));background:#fff;
      border-radius:12px;box-shadow:0 6px 24px #0003;display:flex;flex-direction:column;overflow:hidden;font-size:14px;color:#111}
    .panel[hidden]{display:none}.full .panel{position:fixed;inset:0;width:100%;height:100%;border-radius:0}.full .launcher{display:none}
    header{display:flex;align-items:center;padding:12px 14px;background:#c8102e;color:#fff;font-size:15px}header span{flex:1}
    header button{background:none;border:0;color:#fff;font-size:20px;cursor:pointer}.full header button{display:none}
    .log{flex:1;overflow-y:auto;padding:10px;display:flex;flex-direction:column;gap:6px;background:#f7f8fa}
    .m{padding:8px 12px;border-radius:10px;max-width:82%;white-space:pre-wrap;word-break:break-word;line-height:1.5}
    .user{background:#dbeafe;align-self:flex-end}.bot{background:#fff;border:1px solid #eee;align-self:flex-start}
    .agent{background:#ecfdf5;border:1px solid #a7f3d0;align-self:flex-start}.agent .who{display:block;font-size:12px;color:#047857;margin-bottom:2px}
    .sys{align-self:center;color:#666;font-size:12px;background:none;text-align:center}
    .qr{display:inline-block;margin:6px 6px 0 0;padding:4px 10px;border:1px solid #c8102e;border-radius:14px;color:#c8102e;background:#fff;cursor:pointer;font-size:13px}
    a{color:#1d4ed8}.typing{align-self:flex-start;color:#999;padding:4px 12px}.typing[hidden]{display:none}
    .status{font-size:12px;color:#b45309;padding:2px 10px;background:#fffbeb}.status:empty{display:none}
    form{display:flex;border-top:1px solid #eee;background:#fff}input{flex:1;padding:12px;border:0;font-size:15px;outline:none;min-width:0}
    form button{padding:0 18px;border:0;background:#c8102e;color:#fff;font-size:14px;cursor:pointer}
    @media (max-width:480px){.panel{position:fixed;inset:0;width:100%;height:100%;border-radius:0}}
  </style>
  <div class="wrap${fullpage ? ' full' : ''}">
    <div class="panel" part="panel" hidden role="dialog">
      <header><span class="title"></span><button class="close" type="button">×</button></header>
      <div class="status" role="status"></div>
      <div class="log" aria-live="polite"></div>
      <div class="typing" hidden>···</div>
      <form><input class="text" autocomplete="off" maxlength="5000"><button class="send" type="submit"></button></form>
    </div>
    <button class="launcher" type="button"></button>
  </div>`;
  const $ = sel => root.querySelector(sel);
  const log = $('.log'), panel = $('.panel'), typing = $('.typing'), status = $('.status'), input = $('.text');
  $('.title').textContent = data.title || T.title;
  $('.launcher').textContent = T.open;
  $('.close').title = T.close;
  $('.send').textContent = T.send;
  input.placeholder = T.placeholder;

  // ------------------------------------------------------------------ rendering
  // Simple markdown: **bold**, [text](https://…) and bare http(s) links, line breaks. Built as DOM nodes.
  function inline(parent, text) {
    const pattern = /\*\*([^*]+)\*\*|\[([^\]]+)\]\((https?:\/\/[^\s)]+)\)|(https?:\/\/[^\s<>()（）]+)/g;
    let last = 0, m;
    while ((m = pattern.exec(text))) {
      if (m.index > last) parent.appendChild(document.createTextNode(text.slice(last, m.index)));
      if (m[1]) { const b = document.createElement('strong'); b.textContent = m[1]; parent.appendChild(b); }
      else { const a = document.createElement('a'); a.href = m[3] || m[4]; a.textContent = m[2] || m[4];
             a.target = '_blank'; a.rel = 'noopener noreferrer'; parent.appendChild(a); }
      last = pattern.lastIndex;
    }
    if (last < text.length) parent.appendChild(document.createTextNode(text.slice(last)));
  }
  function bubble(kind, text, extra) {
    const d = document.createElement('div');
    d.className = 'm ' + kind;
    if (kind === 'agent') { const w = document.createElement('span'); w.className = 'who'; w.textContent = (extra && extra.name) || T.agent; d.appendChild(w); }
    if (kind === 'user' || kind === 'sys') d.textContent = text; else inline(d, text || '');
    log.appendChild(d);
    log.scrollTop = log.scrollHeight;
    return d;
  }
  const seenSeq = new Set();
  let lastSeq = 0, handover = null;
  function notice(h) {
    handover = h && h.status !== 'closed' ? h : null;
    if (!h) return;
    bubble('sys', h.status === 'waiting' ? T.waiting : h.status === 'active' ? T.active.replace('{name}', h.agent_name || '') : T.closed);
  }
  function showReply(msg) {
    typing.hidden = true;
    if (msg.handoff) { notice(typeof msg.handoff === 'object' ? msg.handoff : {status: 'waiting'}); return; }
    if (msg.agent) {
      if (msg.seq) { if (seenSeq.has(msg.seq)) return; seenSeq.add(msg.seq); lastSeq = Math.max(lastSeq, msg.seq); }
      bubble('agent', msg.text, msg.agent); return;
    }
    if (!msg.text && !msg.quick_replies) return;
    const d = bubble('bot', msg.text || '');
    (msg.quick_replies || msg.buttons || []).forEach(q => {
      const b = document.createElement('button'); b.type = 'button'; b.className = 'qr'; b.textContent = q.title;
      b.onclick = () => send(q.payload, q.title); d.appendChild(document.createElement('br')); d.appendChild(b);
    });
  }

  // ------------------------------------------------------------------ transport
  let socket = null, rest = false;
  const outbox = [];
  function transmit(message) {
    if (socket && socket.connected) { socket.emit('user_uttered', {message, session_id: sessionId}); return; }
    if (socket && !rest) { outbox.push(message); return; }  // socket.io reconnecting: sent on reconnect
    postRest(message, 0);
  }
  async function postRest(message, attempt) {
    try {
      const r = await fetch(server + '/chat/send', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                                     body: JSON.stringify({sender: sessionId, message})});
      const body = await r.json();
      status.textContent = '';
      (body.messages || []).forEach(showReply);
    } catch (e) {
      status.textContent = T.failed;
      setTimeout(() => postRest(message, attempt + 1), Math.min(15000, 1000 * 2 ** attempt));
    }
  }
  function send(message, shown, silent) {
    if (!silent) bubble('user', shown || message);
    if (!handover && !silent) typing.hidden = false;
    setTimeout(() => { typing.hidden = true; }, 12000);
    transmit(message);
  }
  function useRest() {
    if (rest) return;
    rest = true;
    if (socket) socket.close();
    socket = null;
    outbox.splice(0).forEach(m => postRest(m, 0));
  }
  function connect() {
    if (typeof window.io !== 'function') { useRest(); return; }
    socket = window.io(server, {transports: ['websocket'], reconnectionDelayMax: 10000});
    let everConnected = false;
    const fallback = setTimeout(() => { if (!everConnected) useRest(); }, 6000);
    socket.on('connect', () => {
      if (everConnected) status.textContent = T.online, setTimeout(() => { if (status.textContent === T.online) status.textContent = ''; }, 2000);
      everConnected = true; clearTimeout(fallback);
      socket.emit('session_request', {session_id: sessionId});
    });
    socket.on('session_confirm', () => { outbox.splice(0).forEach(m => socket.emit('user_uttered', {message: m, session_id: sessionId})); });
    socket.on('bot_uttered', showReply);
    socket.on('disconnect', () => { status.textContent = T.offline; });
    socket.on('connect_error', () => { if (everConnected) status.textContent = T.offline; });
  }
  function loadSocketIo(done) {
    if (typeof window.io === 'function') { done(); return; }
    const s = document.createElement('script');
    s.src = server + '/vendor/socket.io.min.js';
    s.onload = done; s.onerror = done;  // no socket.io: REST fallback
    document.head.appendChild(s);
  }

  // ------------------------------------------------------------------ history and hand-over polling
  async function history(after) {
    const r = await fetch(server + '/chat/history?session_id=' + encodeURIComponent(sessionId) + '&after=' + after);
    if (!r.ok) throw new Error('history ' + r.status);
    return r.json();
  }
  let started = false;
  async function start() {
    if (started) return;
    started = true;
    let restored = null;
    try { restored = await history(0); } catch (e) { status.textContent = T.offline; }
    loadSocketIo(connect);
    if (restored && restored.turns.length) {
      restored.turns.forEach(t => {
        seenSeq.add(t.seq); lastSeq = Math.max(lastSeq, t.seq);
        if (t.speaker === 'agent') bubble('agent', t.text); else bubble(t.speaker === 'user' ? 'user' : 'bot', t.text);
      });
      if (restored.handover) notice(restored.handover);
    } else {
      send('/greet', '', true);  // the greeting comes from the bot (utter_greet), so staff change it in one place
    }
  }
  // While a person has the chat, agent lines also arrive by polling: pushes reach only the web worker the socket is on.
  setInterval(async () => {
    if (!handover) return;
    try {
      const h = await history(lastSeq);
      h.turns.forEach(t => { lastSeq = Math.max(lastSeq, t.seq);
        if (t.speaker === 'agent' && !seenSeq.has(t.seq)) { seenSeq.add(t.seq); bubble('agent', t.text); } });
      if (!h.handover) notice({status: 'closed'});
      else if (h.handover.status !== handover.status) notice(h.handover);
    } catch (e) { /* the socket's own status line says when the server is gone */ }
  }, 3000);

  function open() { panel.hidden = false; start(); input.focus(); sessionStorage.setItem('callbot_open', '1'); }
  $('.launcher').onclick = () => (panel.hidden ? open() : (panel.hidden = true, sessionStorage.removeItem('callbot_open')));
  $('.close').onclick = () => { panel.hidden = true; sessionStorage.removeItem('callbot_open'); };
  $('form').onsubmit = e => { e.preventDefault(); const text = input.value.trim(); if (text) { send(text); input.value = ''; } };
  (document.body ? Promise.resolve() : new Promise(r => addEventListener('DOMContentLoaded', r))).then(() => {
    document.body.appendChild(host);
    if (fullpage || sessionStorage.getItem('callbot_open')) open();
  });
  window.callbotWidget = {open, sessionId: () => sessionId};
})();
