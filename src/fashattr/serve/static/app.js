// fashattr web page: upload photos to /v1/predict, show attributes per group, Grad-CAM via /v1/explain.
// No external assets and no framework; text is always inserted with textContent (never innerHTML).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  let schema = null;
  const headers = () => {
    const t = sessionStorage.getItem("fashattr-token");
    return t ? { Authorization: "Bearer " + t } : {};
  };
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const notice = (msg) => { $("notice").textContent = msg; $("notice").hidden = !msg; };

  async function errorText(resp) {
    try { const j = await resp.json(); return `${resp.status}: ${j.error || JSON.stringify(j)}`; }
    catch (_) { return `${resp.status} ${resp.statusText}`; }
  }

  async function loadSchema() {
    const resp = await fetch("/v1/schema", { headers: headers() });
    if (resp.status === 401) { $("auth").hidden = false; $("model").textContent = "this server needs a token"; return; }
    if (resp.status === 503) { $("model").textContent = "model loading…"; setTimeout(loadSchema, 1000); return; }
    if (!resp.ok) { notice("cannot read the model's schema: " + await errorText(resp)); return; }
    schema = await resp.json();
    $("auth").hidden = true;
    $("model").textContent = `model ${(schema.model_id || "run").slice(0, 12)} · ${schema.backend} · ` +
      schema.groups.map((g) => g.name).join(", ");
    $("gallery").hidden = !schema.catalog;
    // The decodings the bundle carries (`fashattr calibrate`), the server's default first selected: what a shop
    // (accuracy) or a challenge (balanced) wants differs, so the page says which one drew the labels.
    const modes = schema.decode_modes || [];
    if (modes.length) {
      const sel = $("decode"); sel.replaceChildren();
      for (const m of [...modes, "none"]) {
        const o = el("option", null, m + (m === schema.default_decode ? " (default)" : "") + (DECODINGS[m] ? ` — ${DECODINGS[m]}` : ""));
        o.value = m; o.selected = m === schema.default_decode; sel.append(o);
      }
      $("decoding").hidden = false;
    }
  }
  const DECODINGS = { accuracy: "most labels right", balanced: "rare classes count as much", none: "raw model" };
  const decodeParam = () => ($("decoding").hidden ? "" : `&decode=${encodeURIComponent($("decode").value)}`);

  function chip(entry, alts) {
    const wrap = el("div");
    // An unsure answer (below the bundle's threshold, more likely wrong than right) is drawn as one: not like a 92% one.
    const c = el("span", entry.unsure ? "chip unsure" : "chip", entry.class);
    c.title = `${(entry.prob * 100).toFixed(1)}%` + (entry.unsure ? " — unsure" : "") + (alts ? " — click for the top 3" : "");
    wrap.append(c, el("span", "prob", ` ${(entry.prob * 100).toFixed(1)}%` + (entry.unsure ? " unsure" : "")));
    const bar = el("div", "bar"); const fill = el("span"); fill.style.width = `${(entry.prob * 100).toFixed(1)}%`;
    bar.append(fill); wrap.append(bar);
    if (alts) {
      const list = el("ol", "alts"); list.hidden = true;
      for (const a of alts) list.append(el("li", null, `${a.class} — ${(a.prob * 100).toFixed(1)}%`));
      // Hover shows the alternatives; a click pins them open (or unpins them).
      c.addEventListener("click", () => { c.dataset.pinned = c.dataset.pinned ? "" : "1"; list.hidden = !c.dataset.pinned; });
      c.addEventListener("mouseenter", () => { list.hidden = false; });
      c.addEventListener("mouseleave", () => { list.hidden = !c.dataset.pinned; });
      wrap.append(list);
    }
    return wrap;
  }

  function render(card, result) {
    const groups = el("div", "groups");
    for (const g of schema.groups) {
      const box = el("div", "group"); box.dataset.group = g.name;
      box.append(el("h3", null, g.name));
      const v = result.groups[g.name];
      if (Array.isArray(v)) {
        if (!v.length) box.append(el("span", "chip none", "none"));
        for (const e of v) box.append(chip(e, null));
      } else {
        box.append(chip(v, v.top));
      }
      groups.append(box);
    }
    card.querySelector(".body").replaceChildren(groups);
    if (result.decoding) card.querySelector(".body").append(el("p", "muted decoded", `decoding: ${result.decoding}`));
    if (schema.explain) {
      const btn = el("button", null, "Grad-CAM per group"); btn.type = "button";
      btn.addEventListener("click", () => explain(card, btn));
      card.querySelector(".body").append(btn);
    }
  }

  async function explain(card, btn) {
    btn.disabled = true; btn.textContent = "computing Grad-CAM…";
    const form = new FormData(); form.append("file", card._file, card._file.name);
    const resp = await fetch("/v1/explain", { method: "POST", body: form, headers: headers() });
    if (!resp.ok) { btn.replaceWith(el("div", "error", "Grad-CAM failed: " + await errorText(resp))); return; }
    const j = await resp.json();
    for (const [g, src] of Object.entries(j.overlays)) {
      const img = el("img", "cam"); img.src = src; img.alt = `Grad-CAM for ${g}`;
      card.querySelector(`.group[data-group="${CSS.escape(g)}"]`).append(img);
    }
    btn.remove();
  }

  async function upload(file, card) {
    if (!card) {
      card = el("article", "card"); card._file = file;
      const img = el("img"); img.alt = file.name; img.src = URL.createObjectURL(file);
      const right = el("div"); right.style.flex = "1";
      right.append(el("h2", null, file.name));
      right.append(el("div", "body"));
      card.append(img, right); $("results").prepend(card);
    }
    const body = card.querySelector(".body");
    body.replaceChildren(el("p", "pending", "predicting…"));
    if (schema && file.size > schema.limits.max_body_bytes) {
      body.replaceChildren(el("div", "error", `too large: ${file.size} bytes; the limit is ${schema.limits.max_body_bytes}`));
      return;
    }
    try {
      const form = new FormData(); form.append("file", file, file.name);
      const resp = await fetch("/v1/predict?top_k=3" + decodeParam(), { method: "POST", body: form, headers: headers() });
      if (resp.status === 401) { $("auth").hidden = false; }
      if (!resp.ok) { body.replaceChildren(el("div", "error", await errorText(resp))); return; }
      if (!schema) await loadSchema();
      render(card, (await resp.json()).results[0]);
    } catch (e) {
      body.replaceChildren(el("div", "error", "request failed: " + e.message));
    }
  }

  const take = (files) => { notice(""); for (const f of files) upload(f); };
  // Another decoding: every photo on the page predicted again with it.
  $("decode").addEventListener("change", () => { for (const c of document.querySelectorAll(".card")) upload(c._file, c); });
  $("files").addEventListener("change", (e) => { take(e.target.files); e.target.value = ""; });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); take(e.dataTransfer.files); });
  $("save-token").addEventListener("click", () => {
    sessionStorage.setItem("fashattr-token", $("token").value.trim()); $("token").value = ""; loadSchema();
  });
  loadSchema();
})();
