// leukedge station page, its words and small renderers (station.js wires them to the state).
// Every sentence the technician reads about a decision is here, once.
"use strict";
window.Station = (function () {
  const $ = (id) => document.getElementById(id);
  // what "refer" asks the technician to do: the card, the footer and the printed report say it so
  const REFER_MEANS = "send the slide for a haematologist's second read";
  const GATE = {
    moving: "Waiting: the stage is moving. Hold the slide still.",
    settling: "Waiting: the picture is settling.",
    blank: "Waiting: blank field, no cells in view. Move to a field with cells.",
    blurred: "Waiting: out of focus. Adjust the focus.",
    same_field: "Waiting: same field as the last one. Move to a new field.",
  };
  // why the image statistics call a field unfamiliar, in words a technician acts on
  const UNFAMILIAR_WHY = {
    stain: "stain or colour unlike the training slides",
    focus: "focus unlike the training slides",
    scale: "magnification or camera unlike the training slides",
  };
  let tz = 0;

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
  const pct = (p) => (100 * p).toFixed(1) + " %";
  // a cut-off as a percentage, to 0.1 where that matters (0.998 is "99.8 %", never a rounded "100 %")
  const share = (x) => (x === null || x === undefined ? "-" : String(+(100 * x).toFixed(1)) + " %");
  function kind(decision) {
    if (!decision) return "none";
    if (decision === "refer") return "refer";
    if (decision === "insufficient") return "insufficient";
    return decision.toLowerCase() === "benign" ? "benign" : "positive";
  }
  function words(decision) {
    return decision === "refer" ? "Refer" : decision === "insufficient" ? "Insufficient evidence" : decision;
  }
  // "refers below 81 % confidence": the cut-off under which a decision becomes refer
  function cutoff(node, below) {
    node.hidden = below === null || below === undefined;
    node.textContent = node.hidden ? "" : "refers below " + share(below) + " confidence";
  }

  // the live field on one line: its class and top probability, or why it is referred
  function setFieldDecision(node, f) {
    node.className = "fdecision " + kind(f.decision);
    const top = f.probs ? Math.max(...Object.values(f.probs)) : null;
    if (f.ood && f.ood.unfamiliar) {
      node.className += " unfamiliar";  // wraps: the reason and what to check must be read in full
      node.textContent = "\u26A0 UNFAMILIAR INPUT: " + (UNFAMILIAR_WHY[f.ood.reason] || "unlike the training slides") +
        " \u2014 check stain, magnification, camera";
    } else if (f.decision === "refer") {
      node.textContent = "\u26A0 REFER" + (f.label && top !== null ? " \u00B7 " + f.label + " " + pct(top) : "");
    } else {
      node.textContent = f.decision + (top !== null ? " " + pct(top) : "");
    }
  }
  // a slide (sample) decision in large words, what refer means under it, and the reason when it is not a class
  function setSlideDecision(node, reasonNode, d, emptyText) {
    node.className = "decision " + kind(d && d.decision);
    node.textContent = "";
    reasonNode.hidden = !(d && d.reason);
    reasonNode.textContent = d && d.reason ? "Reason: " + d.reason +
      (d.reason === "not confident" && d.label ? " (most likely " + d.label + ")" : "") : "";
    if (!d || !d.decision) { node.textContent = emptyText; return; }
    if (d.decision === "refer") node.append("\u26A0 REFER", el("small", null, "refer: " + REFER_MEANS));
    else node.textContent = words(d.decision);
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
      row.append(el("span", null, label), track, el("span", null, pct(p)));
      node.append(row);
    }
  }

  // good: a green dot; false: an amber triangle (needs a look); "calm": a grey circle (as configured)
  function status(node, text, good) {
    node.textContent = text;
    node.className = "item " + (good === "calm" ? "calm" : good ? "good" : "warn");
  }
  // the status bar in plain words, on one line: device, source, connection, temperature
  function renderBar(s) {
    $("device").textContent = s.device;
    const cam = s.camera;
    status($("source"), cam.kind_name + (cam.state === "open" ? "" : ": no picture"), cam.state === "open");
    const q = s.mqtt, n = s.outbox.backlog;
    const kept = (n ? plural(n, "result") + " " : "results ") + "kept on this box";
    if (!q.enabled) status($("mqtt"), "Offline mode \u2014 " + kept, s.outbox.dropped ? false : "calm");
    else if (q.connected) status($("mqtt"), "Online" + (n ? " \u00B7 " + n + " to send" : ""), !s.outbox.dropped && n < 100);
    else status($("mqtt"), "Offline since " + clock(q.offline_since).slice(0, 5) + " \u2014 " + kept, false);
    $("temp").hidden = s.cpu_temp_c === null;
    if (s.cpu_temp_c !== null) status($("temp"), "CPU " + s.cpu_temp_c.toFixed(0) + " \u00B0C", s.cpu_temp_c < 80);
  }
  // the engineer's view, behind the Details tap: model, hashes, backend, source, broker, timings
  function renderDetails(s) {
    const m = s.model, cam = s.camera, q = s.mqtt, ob = s.outbox, f = s.field;
    const rows = [
      ["Model", m.name + (m.arch ? " (" + m.arch + (m.format ? ", " + m.format : "") + ")" : "")],
      ["Model sha256", m.short],
      ["Runs on", m.backend],
      ["Refers below", "field " + share(m.refer_below) + ", slide " + share(m.sample_refer_below)],
      ["Source", cam.uri + " \u00B7 " + cam.state + (cam.reopens ? ", reopened " + cam.reopens + "\u00D7" : "") +
        (cam.last_error ? " \u00B7 " + cam.last_error : "")],
      ["MQTT", !q.enabled ? "off (offline mode)" : q.broker + " \u00B7 " + (q.connected ? "connected" :
        "offline since " + clock(q.offline_since)) + (q.last_error ? " \u00B7 " + q.last_error : "")],
      ["Outbox", "backlog " + ob.backlog + (ob.backlog ? ", oldest " + ago(ob.oldest_age_s) : "") +
        (ob.dropped ? ", " + ob.dropped + " dropped" : "") +
        (ob.disk_free_mb !== null ? " \u00B7 " + ob.disk_free_mb + " MB free" : "")],
      ["Last field", f ? "focus " + f.focus.toFixed(2) + " \u00B7 invoke " + f.invoke_ms.toFixed(1) + " ms" : "-"],
      ["Agent", s.agent_version + " \u00B7 gate " + s.gate.mode],
    ];
    const dl = $("details-list");
    dl.textContent = "";
    for (const [k, v] of rows) dl.append(el("dt", null, k), el("dd", null, v));
    $("details").title = "model sha256 " + m.sha256;
  }

  for (const n of document.querySelectorAll(".refer-means")) n.textContent = REFER_MEANS;
  return { $, el, clock, ago, plural, kind, words, cutoff, share, setFieldDecision, setSlideDecision, setProbs, renderBar,
    renderDetails, GATE, REFER_MEANS, setTz: (minutes) => { tz = minutes; } };
})();
