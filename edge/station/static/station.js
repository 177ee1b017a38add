// leukedge station page: renders /api/state, live by Server-Sent Events, polling as fallback.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  // location.origin has no user:password, which fetch() refuses in a URL (a page opened with
  // "user:password@" in its address would otherwise lose its buttons); the browser adds the cached login
  const api = (path) => location.origin + path;
  const GATE = {
    moving: "Waiting: the stage is moving. Hold the slide still.",
    settling: "Waiting: the picture is settling.",
    blank: "Waiting: blank field, no cells in view. Move to a field with cells.",
    blurred: "Waiting: out of focus. Adjust the focus.",
    same_field: "Waiting: same field as the last one. Move to a new field.",
  };
  let state = null, tz = 0, frameVersion = -1, lastNotice = null;
  // the sample id rule (edge/commands.py SAMPLE_ID), said in words when a typed id breaks it
  const ID_RULE = "A sample id is 1-64 characters: letters, digits, '.', '_', ':' or '-', " +
    "starting with a letter or digit (no spaces).";

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }
  // ISO UTC -> the box's local time (its offset comes with the state), whatever the viewer's zone
  function clock(ts, withDate) {
    if (!ts) return "-";
    const d = new Date(Date.parse(ts) + tz * 60000).toISOString();
    return withDate ? d.slice(0, 10) + " " + d.slice(11, 19) : d.slice(11, 19);
  }
  function ago(s) {
    if (s === null || s === undefined) return "";
    if (s < 90) return Math.round(s) + " s";
    if (s < 5400) return Math.round(s / 60) + " min";
    return (s / 3600).toFixed(1) + " h";
  }
  const plural = (n, word) => n + " " + word + (n === 1 ? "" : "s");
  function kind(decision) {
    if (!decision) return "none";
    if (decision === "refer") return "refer";
    if (decision === "insufficient") return "insufficient";
    return decision.toLowerCase() === "benign" ? "benign" : "positive";
  }
  // why the image statistics call a field unfamiliar, in words a technician acts on
  const UNFAMILIAR_WHY = {
    stain: "stain or colour unlike the training slides",
    focus: "focus unlike the training slides",
    scale: "magnification or camera unlike the training slides",
  };
  function setDecision(node, decision, label, emptyText, ood) {
    node.className = "decision " + kind(decision);
    node.textContent = "";
    if (!decision) { node.textContent = emptyText; return; }
    if (ood && ood.unfamiliar) {
      node.append("\u26A0 UNFAMILIAR INPUT", el("small", null, "refer: this field does not look like what the " +
        "model was trained on (" + (UNFAMILIAR_WHY[ood.reason] || "its features") + ") \u2014 check stain, " +
        "magnification, camera"));
    } else if (decision === "refer") {
      node.append("\u26A0 REFER", el("small", null, "refer to a haematologist / second read" +
        (label ? " (most likely " + label + ", not confident)" : "")));
    } else {
      node.textContent = decision;
    }
  }
  // a slide (sample) decision in words: the class, "Refer to a haematologist" or "Insufficient evidence",
  // with the reason under it when it is not a class
  function setSlideDecision(node, reasonNode, d, emptyText) {
    node.className = "decision " + kind(d && d.decision);
    node.textContent = "";
    reasonNode.hidden = !(d && d.reason);
    reasonNode.textContent = d && d.reason ? "Reason: " + d.reason +
      (d.reason === "not confident" && d.label ? " (most likely " + d.label + ")" : "") : "";
    if (!d || !d.decision) { node.textContent = emptyText; return; }
    if (d.decision === "refer") node.append("\u26A0 Refer to a haematologist");
    else if (d.decision === "insufficient") node.append("Insufficient evidence");
    else node.textContent = d.decision;
  }
  function words(decision) {
    return decision === "refer" ? "Refer to a haematologist" : decision === "insufficient" ? "Insufficient evidence" : decision;
  }
  function setProbs(node, probs) {
    node.textContent = "";
    if (!probs) return;
    const top = Math.max(...Object.values(probs));
    for (const [label, p] of Object.entries(probs)) {
      const row = el("div", "p" + (p === top ? " top" : ""));
      const track = el("div", "track"), fill = el("div", "fill");
      fill.style.width = (100 * p).toFixed(1) + "%";
      track.append(fill);
      row.append(el("span", null, label), track, el("span", null, (100 * p).toFixed(1) + "%"));
      node.append(row);
    }
  }
  // good: a green dot; false: an amber triangle (needs a look); "calm": a grey circle (as configured)
  function status(node, text, good) {
    node.textContent = text;
    node.className = "item " + (good === "calm" ? "calm" : good ? "good" : "warn");
  }

  function render(s) {
    state = s; tz = s.tz.offset_min;
    beat(s.ts);
    $("device").textContent = s.device;
    $("tz").textContent = s.tz.name + ", UTC" + (tz >= 0 ? "+" : "") + tz / 60;
    const m = s.model;
    $("model").textContent = m.name + " " + m.short + " on " + m.backend;
    status($("camera"), "camera " + (s.camera.state === "open" ? "open" : "reopening") +
      (s.camera.last_error ? ": " + s.camera.last_error : ""), s.camera.state === "open");
    const q = s.mqtt, ob = s.outbox;
    if (!q.enabled) {  // MQTT off by configuration: nothing is wrong, nothing waits for a broker
      status($("mqtt"), "Offline mode \u2014 results kept on this box", "calm");
      status($("outbox"), plural(ob.backlog, "result") + " stored", ob.dropped ? false : "calm");
    } else {
      status($("mqtt"), q.connected ? "MQTT connected" : "MQTT offline since " + clock(q.offline_since).slice(0, 5),
        q.connected);
      status($("outbox"), "backlog " + ob.backlog + (ob.backlog ? ", oldest " + ago(ob.oldest_age_s) : ""),
        !ob.dropped && (ob.backlog === 0 || (q.connected && ob.backlog < 100)));
    }
    $("temp").hidden = s.cpu_temp_c === null;
    if (s.cpu_temp_c !== null) status($("temp"), "CPU " + s.cpu_temp_c.toFixed(0) + " \u00B0C", s.cpu_temp_c < 80);

    const w = $("warnings");
    w.textContent = "";
    for (const x of s.warnings) w.append(el("div", "w-" + x.kind, x.text));

    const f = s.field;
    if (f) {
      setDecision($("field-decision"), f.decision, f.label, "", f.ood);
      setProbs($("field-probs"), f.probs);
      $("field-meta").textContent = "field " + f.field + (f.sample_id ? " of " + f.sample_id : "") + " at " +
        clock(f.ts) + " \u00B7 focus " + f.focus.toFixed(2) + " \u00B7 invoke " + f.invoke_ms.toFixed(1) + " ms";
      if (f.frame_version !== frameVersion) {
        frameVersion = f.frame_version;
        $("thumb").src = "/frame.jpg?v=" + frameVersion;
        $("thumb").hidden = false;
      }
    }
    const g = GATE[s.gate.reason];
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
    setSlideDecision($("sample-decision"), $("sample-reason"), sm.open ? sm : null,
      sm.open ? "No field yet" : "No sample open");
    setProbs($("sample-probs"), sm.probs);
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
      setSlideDecision($("closed-decision"), $("closed-reason"), c, "");
      setProbs($("closed-probs"), sm.open ? null : c.probs);
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
      li.append(el("span", "t", t), el("span", "w", what), el("b", "d " + kind(d), d === "refer" ? "refer" : d));
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
    $("r-decision").textContent = c.decision === "refer" ? "REFER - refer to a haematologist / second read" : words(c.decision);
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
  function badId() {
    if (!input.value.trim() || input.checkValidity()) return false;
    $("msg").className = "msg error";
    $("msg").textContent = "Not a sample id: " + JSON.stringify(input.value.trim()) + ". " + ID_RULE;
    input.focus();
    return true;
  }
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
