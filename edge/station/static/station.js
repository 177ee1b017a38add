// leukedge station page: renders /api/state (with station-parts.js), live by Server-Sent Events, polling as fallback.
"use strict";
(function () {
  const S = window.Station, $ = S.$, el = S.el, clock = S.clock, plural = S.plural;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  // location.origin has no user:password, which fetch() refuses in a URL (a page opened with
  // "user:password@" in its address would otherwise lose its buttons); the browser adds the cached login
  const api = (path) => location.origin + path;
  // the sample id rule, served by the agent from edge/commands.py: the page checks and says the same
  const ID_PATTERN = new RegExp(document.querySelector('meta[name="sample-id-pattern"]').content);
  const ID_RULE = document.querySelector('meta[name="sample-id-rule"]').content;
  let state = null, frameVersion = -1, lastNotice = null;

  function render(s) {
    state = s;
    S.setTz(s.tz.offset_min);
    beat(s.ts);
    const tz = s.tz.offset_min;
    $("tz").textContent = s.tz.name + ", UTC" + (tz >= 0 ? "+" : "") + tz / 60;
    S.renderBar(s);
    S.renderDetails(s);
    const w = $("warnings");
    w.textContent = "";
    for (const x of s.warnings) w.append(el("div", "w-" + x.kind, x.text));

    const f = s.field;
    if (f) {
      S.setFieldDecision($("field-decision"), f);
      $("field-meta").textContent = "field " + f.field + (f.sample_id ? " of " + f.sample_id : "") + " at " +
        clock(f.ts) + (s.model.refer_below !== null ? " \u00B7 refers below " + S.share(s.model.refer_below) : "");
      if (f.frame_version !== frameVersion) {
        frameVersion = f.frame_version;
        $("thumb").src = "/frame.jpg?v=" + frameVersion;
        $("thumb").hidden = false;
      }
    }
    const g = S.GATE[s.gate.reason];
    $("gate").hidden = !g;
    $("gate").textContent = g || "";

    renderSample(s);
    list($("recent-fields"), s.recent_fields, (r) => [clock(r.ts), "#" + r.field + " " + (r.sample_id || ""), r.decision]);
    list($("recent-samples"), s.recent_samples, (r) => [clock(r.ts), r.sample_id + " (" + r.n_fields + ")", r.decision]);
  }
  function renderSample(s) {
    const sm = s.sample;
    $("sample-id").textContent = sm.open ? sm.sample_id : "none open";
    $("sample-fields").textContent = sm.open ? plural(sm.n_fields, "field") + " since " + clock(sm.opened) +
      (sm.n_unfamiliar ? " (" + sm.n_unfamiliar + " unfamiliar)" : "") + ", " + sm.min_fields + " needed" : "";
    S.setSlideDecision($("sample-decision"), $("sample-reason"), sm.open ? sm : null,
      sm.open ? "No field yet" : "No sample open");
    S.cutoff($("sample-cutoff"), sm.open ? s.model.sample_refer_below : null);
    S.setProbs($("sample-probs"), sm.probs);
    $("sample-none").hidden = sm.open;
    $("sample-none").textContent = sm.open ? "" : (sm.auto_open ? "The next field opens a sample." :
      "Press Start sample or scan the slide's id to start one. Fields seen now are shown but pooled into no sample") +
      (sm.unpooled ? " (" + plural(sm.unpooled, "field") + " not pooled so far)." : sm.auto_open ? "" : ".");

    // the closed slide's card: the largest thing on the page until the next sample opens, then one line
    const c = s.last_sample;
    $("closed").hidden = !c;
    document.body.classList.toggle("slide-closed", !!c && !sm.open);
    if (c) {
      $("closed-h").textContent = sm.open ? "Last closed sample" : "Slide result";
      $("closed-id").textContent = c.sample_id;
      $("closed-meta").textContent = plural(c.n_fields, "field") + (c.n_unfamiliar ? " (" + c.n_unfamiliar +
        " unfamiliar)" : "") + ", closed " + clock(c.ts) + " (" + c.closed_by + ")";
      S.setSlideDecision($("closed-decision"), $("closed-reason"), c, "");
      S.cutoff($("closed-cutoff"), sm.open ? null : c.refer_below ?? s.model.sample_refer_below);
      S.setProbs($("closed-probs"), sm.open ? null : c.probs);
    }
    const n = sm.notice;
    if (n && n.n !== lastNotice) {
      lastNotice = n.n;
      $("msg").className = "msg" + (n.text.startsWith("No sample open") ? " warn" : "");
      $("msg").textContent = clock(n.ts) + " " + n.text;
    }
  }
  function list(node, rows, cells) {
    node.textContent = "";
    for (const r of rows) {
      const [t, what, d] = cells(r);
      const li = el("li");
      li.append(el("span", "t", t), el("span", "w", what), el("b", "d " + S.kind(d), d));
      node.append(li);
    }
  }

  function report() {
    const c = state && state.last_sample;
    if (!c) return;
    $("r-id").textContent = c.sample_id;
    $("r-device").textContent = state.device;
    $("r-time").textContent = clock(c.opened, true) + " - " + clock(c.ts, true) + " (" + state.tz.name + ")";
    $("r-fields").textContent = c.n_fields + " (messages " + c.first_seq + "-" + c.last_seq + ")";
    $("r-probs").textContent = c.probs  // none when every field was unfamiliar: nothing was pooled
      ? Object.entries(c.probs).map(([k, p]) => k + " " + (100 * p).toFixed(1) + "%").join(", ")
      : "none (no familiar field to pool)";
    $("r-fields").textContent += (c.n_unfamiliar ? ", " + c.n_unfamiliar + " unfamiliar" : "") +
      "; " + c.min_fields + " familiar fields needed for a decision";
    $("r-decision").textContent = c.decision === "refer" ? "REFER - " + S.REFER_MEANS : S.words(c.decision);
    $("r-reason").textContent = c.reason || "-";
    $("r-model").textContent = state.model.name + ", sha256 " + c.model_sha256;
    window.print();
  }

  async function command(name, body) {
    const msg = $("msg"), before = lastNotice;
    try {
      const r = await fetch(api("/api/sample/" + name), {
        method: "POST", headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify(body || {}), credentials: "same-origin",
      });
      const answer = await r.json();
      if (!r.ok || lastNotice === before) {  // the box's own notice of what it did replaces "Sent"
        msg.className = "msg" + (r.ok ? "" : " error");
        msg.textContent = r.ok ? "Sent: " + name + (answer.sample_id ? " " + answer.sample_id : "") : answer.error;
      }
      return r.ok;
    } catch (e) {
      msg.className = "msg error";
      msg.textContent = "The agent did not answer: " + e;
      return false;
    }
  }
  const input = $("sample-input");
  const typed = () => (input.value.trim() ? { sample_id: input.value.trim() } : {});
  // a typed id the box would refuse: said on the page, in the agent's own words, and nothing is sent
  function badId() {
    const id = input.value.trim();
    const bad = id !== "" && !ID_PATTERN.test(id);
    input.classList.toggle("bad", bad);
    if (!bad) return false;
    $("msg").className = "msg error";
    $("msg").textContent = "Not a sample id: " + JSON.stringify(id) + ". " + ID_RULE[0].toUpperCase() + ID_RULE.slice(1) + ".";
    input.focus();
    return true;
  }
  input.addEventListener("input", () => input.classList.remove("bad"));
  async function start() {
    if (badId()) return;
    const sm = state && state.sample;
    if (sm && sm.open && !window.confirm("Sample " + sm.sample_id + " is open (" + plural(sm.n_fields, "field") +
        "). End it and start a new sample?")) {
      $("msg").className = "msg";
      $("msg").textContent = "Start cancelled: " + sm.sample_id + " stays open.";
      return;
    }
    if (await command("start", typed())) input.value = "";
  }
  $("btn-start").addEventListener("click", start);
  $("btn-next").addEventListener("click", start);
  $("btn-end").addEventListener("click", () => command("end"));
  $("id-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!input.value.trim()) { input.focus(); return; }
    if (badId()) return;
    if (await command("id", typed())) input.value = "";
  });
  $("btn-print").addEventListener("click", report);

  // Liveness: a snapshot, or a heartbeat while the agent's loop is alive, at least every second.
  // Three seconds without one (the agent stopped, hung or unreachable), or its `stopping` event,
  // grey the page over as NOT LIVE and disable its controls; the next sign of life lifts it.
  const NOT_LIVE_AFTER_MS = 3000;
  let lastBeat = Date.now(), beatTs = null, live = true;
  function beat(ts) {
    if (ts && ts === beatTs) return;  // a poll answered with the same old snapshot: the loop is not coming round
    lastBeat = Date.now();
    if (ts) beatTs = ts;
    if (!live) setLive(true);
  }
  function setLive(on, since) {
    live = on;
    $("notlive").hidden = on;
    document.body.classList.toggle("notlive", !on);
    if (!on) $("notlive-since").textContent = since ? clock(since) : "page load";
    for (const c of document.querySelectorAll("main button, main input")) {
      if (!on && !c.disabled) { c.disabled = true; c.dataset.notlive = "1"; }
      else if (on && c.dataset.notlive) { c.disabled = false; delete c.dataset.notlive; }
    }
  }
  setInterval(() => { if (live && Date.now() - lastBeat > NOT_LIVE_AFTER_MS) setLive(false, beatTs); }, 250);

  let polling = null;
  function poll() {
    if (polling) return;
    polling = setInterval(async () => {
      try {
        const r = await fetch(api("/api/state"), { credentials: "same-origin", cache: "no-store" });
        if (r.ok) render(await r.json());
      } catch (e) { /* shown by the liveness check */ }
    }, 1000);
  }
  function connect() {
    if (!window.EventSource) { poll(); return; }
    const es = new EventSource(api("/api/events"));
    let errors = 0, heard = false;
    es.onmessage = (e) => { errors = 0; heard = true; render(JSON.parse(e.data)); };
    es.addEventListener("heartbeat", (e) => { heard = true; const h = JSON.parse(e.data); if (h.alive) beat(h.ts); });
    es.addEventListener("stopping", (e) => { if (live) setLive(false, JSON.parse(e.data).ts); });
    es.onerror = () => {
      if (!heard && ++errors >= 3) { es.close(); poll(); return; }  // a proxy that breaks streams: poll
      // the browser retries a dropped stream by itself; one it gave up on (an HTTP error) is retried here
      if (es.readyState === EventSource.CLOSED) setTimeout(connect, 2000);
    };
  }
  fetch(api("/api/state"), { credentials: "same-origin" }).then((r) => r.ok && r.json()).then((s) => s && render(s)).catch(() => {});
  connect();
  input.focus();
})();
