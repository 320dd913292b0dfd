// rtanim control panel: talks only to the documented HTTP API of `rtanim webcam --panel` (see README).
"use strict";

const token = new URLSearchParams(location.search).get("token");
const $ = (id) => document.getElementById(id);
const sliders = new Map();   // code -> {input, output, row, pass}
const touched = new Map();   // code -> time of the user's last move (server updates skip it for a while)
let lastPreset = null;
let forced = new Set();      // passthrough codes: follow the face even where set

function headers() {
  const h = { "Content-Type": "application/json" };
  if (token) h["X-Rtanim-Token"] = token;
  return h;
}

function say(text) {
  const m = $("message");
  m.textContent = text || "";
  m.hidden = !text;
}

async function post(path, body) {
  const res = await fetch(path, { method: "POST", headers: headers(),
                                  body: typeof body === "string" ? body : JSON.stringify(body) });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) { say(data.error || `${path}: HTTP ${res.status}`); throw new Error(data.error); }
  say("");
  return data;
}

// Slider moves coalesce: one POST /aus in flight at a time, carrying every change made meanwhile.
let pending = {};
let sending = false;
async function flush() {
  if (sending || !Object.keys(pending).length) return;
  const body = pending;
  pending = {};
  sending = true;
  try { await post("aus", body); } catch (e) { /* shown */ } finally { sending = false; }
  flush();
}
function setAU(code, value) {
  pending[code] = value;
  touched.set(code, performance.now());
  flush();
}

// "live" checked: the AU follows your face (null hands it back); unchecked: it is set, at the value showing.
function onLive(code, input, checked) {
  if (forced.has(code) && !checked) {
    forced.delete(code);
    post("settings", { passthrough: [...forced] }).catch(() => {});
  }
  setAU(code, checked ? null : Number(input.value));
}

function addRow(fieldset, code, text, title, side) {
  const row = document.createElement("div");
  row.className = "au" + (side ? " side" : "");
  const id = "s-" + code;
  row.innerHTML = `<label for="${id}" title="${title}"><b>${code}</b> ${text}</label>` +
    `<input type="range" id="${id}" min="0" max="1" step="0.01" value="0">` +
    `<output for="${id}">0.00</output>` +
    `<label class="pass" title="${code} follows your own face"><input type="checkbox"> live</label>`;
  const input = row.querySelector("input[type=range]");
  const output = row.querySelector("output");
  const pass = row.querySelector(".pass input");
  pass.setAttribute("aria-label", `${code} follows the live face`);
  input.addEventListener("input", () => {
    output.textContent = Number(input.value).toFixed(2);
    setAU(code, Number(input.value));
  });
  pass.addEventListener("change", () => onLive(code, input, pass.checked));
  fieldset.appendChild(row);
  sliders.set(code, { input, output, row, pass });
}

function build(vocab) {
  const groups = new Map(vocab.regions.map((r) => {
    const fs = document.createElement("fieldset");
    fs.innerHTML = `<legend>${r}</legend>`;
    return [r, fs];
  }));
  for (const au of vocab.aus) {
    const fs = groups.get(au.region);
    addRow(fs, au.code, au.name, au.description, false);
    if (au.sided) {
      addRow(fs, au.code + "L", "left", au.name + ", left side only", true);
      addRow(fs, au.code + "R", "right", au.name + ", right side only", true);
    }
  }
  for (const fs of groups.values()) if (fs.children.length > 1) $("aus").appendChild(fs);
  for (const p of vocab.presets) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = p.name.replace("_", " ");
    b.title = p.description;
    b.dataset.preset = p.name;
    b.addEventListener("click", () => applyPreset(p.name));
    $("presets").appendChild(b);
  }
}

function applyPreset(name) {
  lastPreset = name;
  document.querySelectorAll("#presets button").forEach((b) => b.classList.toggle("active", b.dataset.preset === name));
  post("preset", { preset: name, strength: Number($("strength").value) }).catch(() => {});
}

function fmt(v, unit) { return v === null || v === undefined ? "–" : `${v}${unit}`; }

function show(s) {
  const p = s.panel;
  const st = $("status");
  st.textContent = (s.running ? "" : "run ended · ") +
    `${fmt(s.fps, " fps")} · latency ${fmt(s.latency_ms, " ms")} · dropped ${s.dropped} · ` +
    `faces ${s.faces} · ${s.model}` + (s.effect ? "" : " · effect off") + (p.recording ? " · ● recording" : "");
  st.classList.toggle("ended", !s.running);
  const now = performance.now();
  const pass = new Set(p.passthrough);
  forced = pass;
  const following = new Set(p.following || []);
  for (const [code, sl] of sliders) {
    const base = code.length === 5 ? code.slice(0, 4) : code;
    const follows = following.has(code) || (following.has(code + "L") && following.has(code + "R"));
    const live = pass.has(code) || pass.has(base) || follows;
    if (document.activeElement !== sl.pass) sl.pass.checked = pass.has(code) || follows;
    sl.row.classList.toggle("live", live);
    sl.input.disabled = live;
    let v = live ? s.output[code] : p.values[code];
    if (v === undefined && p.values[code + "L"] !== undefined) v = (p.values[code + "L"] + p.values[code + "R"]) / 2;
    if (v === undefined || v === null) continue;
    if (now - (touched.get(code) || 0) < 1500) continue;   // the user is moving it
    sl.input.value = v;
    sl.output.textContent = Number(v).toFixed(2);
  }
  if (document.activeElement !== $("effect")) $("effect").checked = s.effect;
  if (document.activeElement !== $("easing")) { $("easing").value = p.easing; $("easing-out").textContent = `${p.easing.toFixed(2)} s`; }
  const tl = p.timeline;
  $("timeline-state").textContent = tl
    ? `${tl.playing ? "playing" : "paused"} ${tl.position.toFixed(1)} / ${tl.duration.toFixed(1)} s (${tl.loop}) · ${tl.source}`
    : "no timeline playing: sliders drive the face";
  if (tl && document.activeElement !== $("loop")) $("loop").value = tl.loop;
  $("record").setAttribute("aria-pressed", String(p.recording));
  $("record").textContent = p.recording ? "Stop recording" : "Record";
}

function wire() {
  $("preview").src = "preview.mjpg?w=360&fps=10";
  $("effect").addEventListener("change", (e) => post("settings", { effect: e.target.checked }).catch(() => {}));
  $("sided").addEventListener("change", (e) => document.body.classList.toggle("sided", e.target.checked));
  $("strength").addEventListener("input", (e) => {
    $("strength-out").textContent = Number(e.target.value).toFixed(2);
  });
  $("strength").addEventListener("change", () => { if (lastPreset) applyPreset(lastPreset); });
  $("easing").addEventListener("input", (e) => { $("easing-out").textContent = `${Number(e.target.value).toFixed(2)} s`; });
  $("easing").addEventListener("change", (e) => post("settings", { easing: Number(e.target.value) }).catch(() => {}));
  $("timeline-file").addEventListener("change", async (e) => {
    const file = e.target.files[0];
    if (!file) return;
    try { await post("timeline", await file.text()); } catch (err) { /* shown */ }
  });
  for (const action of ["play", "pause", "stop"]) {
    $(action).addEventListener("click", () => post("playback", { action }).catch(() => {}));
  }
  $("loop").addEventListener("change", (e) => post("playback", { loop: e.target.value }).catch(() => {}));
  $("record").addEventListener("click", async () => {
    const on = $("record").getAttribute("aria-pressed") === "true";
    try {
      await post("record", { action: on ? "stop" : "start" });
      $("record").setAttribute("aria-pressed", String(!on));
      if (on) {
        const res = await fetch("record.json", { headers: headers() });
        const blob = new Blob([await res.text()], { type: "application/json" });
        const a = $("download");
        if (a.href) URL.revokeObjectURL(a.href);
        a.href = URL.createObjectURL(blob);
        a.hidden = false;
      }
    } catch (err) { /* shown */ }
  });
}

async function main() {
  const res = await fetch("vocabulary", { headers: headers() });
  if (!res.ok) { say((await res.json().catch(() => ({}))).error || `HTTP ${res.status}`); return; }
  build(await res.json());
  wire();
  const events = new EventSource("events");
  events.onmessage = (e) => show(JSON.parse(e.data));
  events.onerror = () => { $("status").textContent = "disconnected: the rtanim run has ended or restarted"; $("status").classList.add("ended"); };
}

main();
