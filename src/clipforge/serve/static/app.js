// clipforge search page: plain JavaScript, no dependencies, talks only to this server's /api.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  queryFile: null, selected: null, health: null, seq: 0, shown: 0, similarTo: null, promptSets: null,
};
// API parameter -> element id: the filters, and the language of the text (NLLB-CLIP models).
const FILTERS = {
  folder: "folder", after: "after", before: "before", type: "type",
  min_score: "min-score", min_relevance: "min-relevance", lang: "lang",
};

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  let body = null;
  try { body = await response.json(); } catch (_) { /* not JSON */ }
  if (!response.ok) {
    const detail = body && body.detail;
    const message = typeof detail === "string" ? detail : JSON.stringify(detail || response.statusText);
    throw new Error(`${response.status}: ${message}`);
  }
  return body;
}

// The filters (and the language) as API parameters (only those set).
function filterParams() {
  const params = {};
  for (const [name, id] of Object.entries(FILTERS)) {
    const value = $(id).value.trim();
    if (value) params[name] = value;
  }
  return params;
}

// The text query, filters and prompt language live in the page URL, so a search can be bookmarked,
// shared and reloaded.
function syncUrl() {
  const params = new URLSearchParams();
  const text = $("q").value.trim();
  if (text && !state.queryFile) params.set("q", text);
  for (const [name, value] of Object.entries(filterParams())) params.set(name, value);
  if ($("prompt-lang").value) params.set("prompt_lang", $("prompt-lang").value);
  const query = params.toString();
  history.replaceState(null, "", query ? `?${query}` : location.pathname);
}

function restoreFromUrl() {
  const params = new URLSearchParams(location.search);
  $("q").value = params.get("q") || "";
  for (const [name, id] of Object.entries({ ...FILTERS, prompt_lang: "prompt-lang" })) {
    const value = params.get(name);
    if (value === null) continue;
    const el = $(id);
    if (el.tagName === "SELECT" && ![...el.options].some((o) => o.value === value)) {
      el.append(new Option(value, value));  // not (yet) among the index's values: keep it anyway
    }
    el.value = value;
  }
}

async function loadFilters() {
  const f = await api("/api/filters");
  const fill = (select, values) => {
    const current = select.value;
    for (const v of values) {
      if (v && ![...select.options].some((o) => o.value === v)) select.append(new Option(v, v));
    }
    select.value = current;
  };
  fill($("folder"), f.folders);
  fill($("type"), f.types);
  const [first, last] = f.taken_at || [];
  if (first) $("after").min = $("before").min = first.slice(0, 10);
  if (last) $("after").max = $("before").max = last.slice(0, 10);
}

// The language choice, shown only for models whose tokenizer takes one (NLLB-CLIP).
async function loadLanguages() {
  const { language, languages } = await api("/api/languages");
  const select = $("lang");
  const current = select.value;  // from the page URL: kept, even if the model lacks it (the API says so)
  const codes = current && !languages.includes(current) ? [...languages, current] : languages;
  select.replaceChildren(
    new Option(language ? `${language} (default)` : "default", ""), ...codes.map((c) => new Option(c, c)),
  );
  select.value = current;
  select.hidden = !languages.length && !current;
}

// The language of the classify panel's prompt templates (ISO 639-1: de, ja...), shown only when the
// built-in sets come in more than English. Not the `lang` menu: that is the text tower's (NLLB-CLIP).
async function loadPromptLanguages() {
  const { prompt_language, templates, prompt_languages } = await api("/api/prompt-languages");
  state.promptSets = { templates, sets: prompt_languages };
  const select = $("prompt-lang");
  const current = select.value;  // from the page URL: kept, even if no set has it (the API says so)
  const codes = Object.keys(prompt_languages);
  if (current && !codes.includes(current)) codes.push(current);
  const option = (code) => {
    const sets = prompt_languages[code] || [];
    const shown = sets.includes(templates) || !sets.length ? code : `${code} (${sets[0]})`;
    return new Option(shown, code);
  };
  select.replaceChildren(new Option(`${prompt_language} (default)`, ""), ...codes.map(option));
  select.value = current;
  $("prompt-lang-row").hidden = Object.keys(prompt_languages).length < 2 && !current;
}

// The classify request's prompt language, and the template set when the server's is not in it.
function promptParams() {
  const code = $("prompt-lang").value;
  if (!code) return {};
  const { templates, sets } = state.promptSets || { templates: null, sets: {} };
  const inCode = sets[code] || [];
  if (inCode.length && !inCode.includes(templates)) return { prompt_lang: code, templates: inCode[0] };
  return { prompt_lang: code };
}

function renderHits(hits, took, append = false) {
  const grid = $("results");
  if (!append) {
    grid.replaceChildren();
    state.shown = 0;
  }
  state.shown += hits.length;
  for (const hit of hits) {
    const figure = document.createElement("figure");
    figure.className = "hit";
    figure.dataset.id = hit.id;
    const img = document.createElement("img");
    img.loading = "lazy";
    img.alt = hit.path;
    img.src = `/api/thumb/${hit.id}`;
    const caption = document.createElement("figcaption");
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = hit.score.toFixed(3);
    score.title = "cosine similarity";
    caption.append(score);
    if (hit.relevance !== null && hit.relevance !== undefined) {
      const relevance = document.createElement("span");
      relevance.className = "relevance";
      relevance.title = "relevance: the score calibrated against this query's scores over the collection";
      relevance.textContent = `${Math.round(100 * hit.relevance)}%`;
      caption.append(relevance);
    }
    caption.append(document.createTextNode(hit.path));
    if (hit.taken_at) {
      const taken = document.createElement("span");
      taken.className = "taken";
      taken.textContent = hit.taken_at.replace("T", " ") + (hit.camera ? ` · ${hit.camera}` : "");
      caption.append(taken);
    }
    if (hit.width) img.title = `${hit.width}×${hit.height} ${hit.type || ""}`;
    figure.append(img, caption);
    figure.addEventListener("click", () => selectIndexed(hit, figure));
    figure.addEventListener("dblclick", () => window.open(`/api/image/${hit.id}`, "_blank", "noopener"));
    grid.append(figure);
  }
  // A full page means there may be more: offer the next one.
  $("more").hidden = hits.length < Number($("k").value);
  const n = state.shown;
  setStatus(`${n} result${n === 1 ? "" : "s"} in ${took} ms`);
}

// One page of the current search: by uploaded image, by indexed image ("more like this") or by text.
async function fetchPage(offset) {
  const text = $("q").value.trim();
  const k = Number($("k").value);
  const filters = filterParams();
  if (state.queryFile) {
    const params = new URLSearchParams({ k, offset, ...filters });
    if (text && $("combine").checked) params.set("text", text);
    return api(`/api/search/image?${params}`, {
      method: "POST", body: state.queryFile,
      headers: { "Content-Type": state.queryFile.type || "application/octet-stream" },
    });
  }
  if (state.similarTo !== null) {
    const body = { id: state.similarTo, k, offset, ...filters };
    if (body.min_score !== undefined) body.min_score = Number(body.min_score);
    if (body.min_relevance !== undefined) body.min_relevance = Number(body.min_relevance);
    if (body.type !== undefined) body.type = [body.type];
    return api("/api/search", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
  }
  if (!text) return null;
  return api(`/api/search?${new URLSearchParams({ q: text, k, offset, ...filters })}`);
}

async function runSearch({ append = false, similarTo = null } = {}) {
  if (!append) state.similarTo = similarTo;
  syncUrl();
  const seq = ++state.seq;  // a slower, older answer must not overwrite a newer one
  const started = performance.now();
  try {
    const result = await fetchPage(append ? state.shown : 0);
    if (result === null) {
      $("results").replaceChildren();
      $("more").hidden = true;
      return;
    }
    if (seq === state.seq) renderHits(result.hits, Math.round(performance.now() - started), append);
  } catch (err) {
    if (seq === state.seq) setStatus(err.message, true);
  }
}

function showQueryImage(file) {
  state.queryFile = file;
  const box = $("query-image");
  box.hidden = !file;
  if (file) box.querySelector("img").src = URL.createObjectURL(file);
}

function selectIndexed(hit, figure) {
  document.querySelectorAll(".hit.picked").forEach((el) => el.classList.remove("picked"));
  figure.classList.add("picked");
  state.selected = { id: hit.id };
  const img = document.createElement("img");
  img.src = `/api/thumb/${hit.id}`;
  img.alt = hit.path;
  $("selected").replaceChildren(img);
  $("selected").classList.remove("empty");
}

function selectFile(file) {
  state.selected = { file };
  const img = document.createElement("img");
  img.src = URL.createObjectURL(file);
  img.alt = file.name;
  $("selected").replaceChildren(img);
  $("selected").classList.remove("empty");
}

function useFile(file) {
  if (!file || !file.type.startsWith("image/")) {
    setStatus("drop an image file (jpg, png, webp, gif, bmp, tiff)", true);
    return;
  }
  showQueryImage(file);
  selectFile(file);
  runSearch();
}

async function classify() {
  const labels = $("labels").value.split(",").map((s) => s.trim()).filter(Boolean);
  if (!state.selected) return setStatus("pick an image first (click a result or drop one)", true);
  if (!labels.length) return setStatus("type some labels, comma-separated", true);
  try {
    let result;
    const lang = $("lang").value;
    if (state.selected.file) {
      const params = new URLSearchParams({ labels: labels.join(","), k: labels.length, ...promptParams() });
      if (lang) params.set("lang", lang);
      result = await api(`/api/classify?${params}`, { method: "POST", body: state.selected.file });
    } else {
      const body = { id: state.selected.id, labels, k: labels.length, ...promptParams() };
      if (lang) body.lang = lang;
      result = await api("/api/classify/indexed", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      });
    }
    const list = $("labels-out");
    list.replaceChildren();
    for (const { label, score } of result.labels) {
      const li = document.createElement("li");
      li.textContent = `${label} — ${(100 * score).toFixed(1)}%`;
      const bar = document.createElement("div");
      bar.className = "bar";
      bar.style.width = `${Math.max(1, 100 * score)}%`;
      li.append(bar);
      list.append(li);
    }
    setStatus("classified");
  } catch (err) {
    setStatus(err.message, true);
  }
}

async function moderate() {
  if (!state.selected) return setStatus("pick an image first", true);
  try {
    const result = state.selected.file
      ? await api("/api/moderate", { method: "POST", body: state.selected.file })
      : await api("/api/moderate/indexed", {
          method: "POST", headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ id: state.selected.id }),
        });
    const out = $("moderation-out");
    out.hidden = false;
    out.textContent = `${result.decision.toUpperCase()}: ${result.matched} (margin ${result.margin.toFixed(3)})`;
  } catch (err) {
    setStatus(err.message, true);
  }
}

function moreLikeThis() {
  if (!state.selected) return setStatus("pick an image first", true);
  if (state.selected.file) return useFile(state.selected.file);
  showQueryImage(null);
  runSearch({ similarTo: state.selected.id });
}

function init() {
  restoreFromUrl();
  let timer = null;
  // Enter searches at once; the pending as-you-type search would repeat it and reset "load more".
  $("search-form").addEventListener("submit", (e) => { e.preventDefault(); clearTimeout(timer); runSearch(); });
  $("q").addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => { if (!state.queryFile) runSearch(); }, 300);
  });
  $("k").addEventListener("change", () => runSearch({ similarTo: state.similarTo }));
  $("more").addEventListener("click", () => runSearch({ append: true }));
  for (const id of Object.values(FILTERS)) {
    $(id).addEventListener("change", () => runSearch({ similarTo: state.similarTo }));
  }
  $("filters").addEventListener("submit", (e) => { e.preventDefault(); runSearch({ similarTo: state.similarTo }); });
  $("file").addEventListener("change", (e) => useFile(e.target.files[0]));
  $("clear-image").addEventListener("click", () => { showQueryImage(null); runSearch(); });
  $("classify").addEventListener("click", classify);
  $("prompt-lang").addEventListener("change", syncUrl);
  $("similar").addEventListener("click", moreLikeThis);
  $("moderate").addEventListener("click", moderate);
  let depth = 0;
  document.addEventListener("dragenter", (e) => { e.preventDefault(); depth++; document.body.classList.add("dragging"); });
  document.addEventListener("dragleave", () => { if (--depth <= 0) { depth = 0; document.body.classList.remove("dragging"); } });
  document.addEventListener("dragover", (e) => e.preventDefault());
  document.addEventListener("drop", (e) => {
    e.preventDefault();
    depth = 0;
    document.body.classList.remove("dragging");
    useFile(e.dataTransfer.files[0]);
  });
  api("/api/health").then((h) => {
    state.health = h;
    $("moderate").hidden = !h.moderation;
    setStatus(`${h.images} images indexed · ${h.model} · ${h.search} search`);
    if ($("q").value.trim()) runSearch();  // a search from the page URL
  }).catch((err) => setStatus(`server unavailable: ${err.message}`, true));
  loadFilters().catch((err) => setStatus(`filters unavailable: ${err.message}`, true));
  loadLanguages().catch((err) => setStatus(`languages unavailable: ${err.message}`, true));
  loadPromptLanguages().catch((err) => setStatus(`prompt languages unavailable: ${err.message}`, true));
}

init();
