// The chat page: pick a persona, ask, watch the answer stream in, open every cited passage.
// Plain JavaScript, no build step. All text from the server is escaped before it becomes HTML.
"use strict";

// Example questions the card answers well, per persona slug, and a fallback for any other card.
const SUGGESTIONS = {
  "sales-manager": [
    "How much pipeline do I need to hit my quota?",
    "Should I coach this rep or manage them out?",
    "What does OTE mean?",
  ],
  "*": ["What is the core of your job?", "How do you work with other teams?", "How do you measure success?"],
};
const KEY_STORAGE = "persona-rag.api-key";
const SCROLL = matchMedia("(prefers-reduced-motion: reduce)").matches ? "auto" : "smooth";

const $ = (id) => document.getElementById(id);
const els = {
  select: $("persona-select"),
  card: $("persona-card"),
  title: $("persona-title"),
  aliases: $("persona-aliases"),
  summary: $("persona-summary"),
  intro: $("intro"),
  suggestions: $("suggestions"),
  log: $("log"),
  status: $("status"),
  form: $("ask-form"),
  question: $("question"),
  send: $("send"),
  startOver: $("start-over"),
  keyForm: $("key-form"),
  keyInput: $("api-key"),
};

const state = {
  personas: [],
  persona: null,
  apiKey: sessionStorage.getItem(KEY_STORAGE) || "",
  controller: null,
  retry: null,
  turns: 0,
  history: [], // this conversation's earlier turns, sent with each question: follow-ups are read in context
};
const HISTORY_MESSAGES = 20; // the most recent turns sent (the server reads the last questions of them)

// ---------------------------------------------------------------- text to safe HTML

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

/** Inline markdown (bold, italic, code) of text that is ALREADY escaped. */
function inline(escaped) {
  return escaped
    .replace(/`([^`]+)`/g, "<code>$1</code>")
    .replace(/\*\*(?=\S)(.+?)\*\*/g, "<strong>$1</strong>")
    .replace(/(^|[^*\w])\*(?=\S)([^*]+?)\*(?!\w)/g, "$1<em>$2</em>")
    .replace(/(^|[^_\w])_(?=\S)([^_]+?)_(?!\w)/g, "$1<em>$2</em>");
}

/** A card passage as HTML: paragraphs, bullet and numbered lists, inline emphasis. */
function passageHtml(text) {
  let html = "";
  let list = null;
  const close = () => {
    if (list) html += `</${list}>`;
    list = null;
  };
  for (const raw of String(text).split("\n")) {
    const line = raw.trim();
    if (!line) {
      close();
      continue;
    }
    const bullet = line.match(/^[-*•]\s+(.*)$/);
    const numbered = line.match(/^\d+[.)]\s+(.*)$/);
    const kind = bullet ? "ul" : numbered ? "ol" : null;
    if (kind !== list) {
      close();
      if (kind) html += `<${kind}>`;
      list = kind;
    }
    const body = inline(escapeHtml(bullet ? bullet[1] : numbered ? numbered[1] : line));
    html += kind ? `<li>${body}</li>` : `<p>${body}</p>`;
  }
  close();
  return html;
}

function wherePath(citation) {
  return citation.item ? `${citation.section} › ${citation.item}` : citation.section;
}

/** Answer text as HTML; each [n] that resolves to a citation becomes a focusable marker. */
function answerHtml(text, citations) {
  const known = new Map(citations.map((c) => [c.n, c]));
  return inline(escapeHtml(text)).replace(/\[(\d+)\]/g, (marker, n) => {
    const citation = known.get(Number(n));
    if (!citation) return marker;
    const label = escapeHtml(`Source ${n}: ${wherePath(citation)}`);
    return `<button type="button" class="cite" data-n="${n}" aria-expanded="false" aria-label="${label}">${n}</button>`;
  });
}

/** The text while it streams: markers are shown but not yet clickable. */
function streamingHtml(text) {
  return inline(escapeHtml(text)).replace(/\[(\d+)\]/g, '<span class="cite cite-pending">$1</span>');
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// ---------------------------------------------------------------- talking to the API

class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

function headers(extra = {}) {
  const all = { Accept: "application/json", ...extra };
  if (state.apiKey) all.Authorization = `Bearer ${state.apiKey}`;
  return all;
}

async function failure(response) {
  let detail = `The server answered ${response.status}.`;
  try {
    const body = await response.json();
    if (body && body.detail) detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch (_) {
    // not JSON: keep the status line
  }
  return new ApiError(detail, response.status);
}

async function api(path, body) {
  const options = body === undefined
    ? { headers: headers() }
    : { method: "POST", headers: headers({ "Content-Type": "application/json" }), body: JSON.stringify(body) };
  const response = await fetch(path, options);
  if (!response.ok) throw await failure(response);
  return response.json();
}

/** Server-Sent Events of a fetch response, as {event, data} with data parsed from JSON. */
async function* sseEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = parseEvent(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
      if (event) yield event;
    }
  }
}

function parseEvent(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  return data.length ? { event, data: JSON.parse(data.join("\n")) } : null;
}

// ---------------------------------------------------------------- the API key (only when the server asks)

function needKey(retry) {
  state.retry = retry;
  els.keyForm.hidden = false;
  els.keyInput.value = "";
  if (state.apiKey) $("key-note").textContent = "That API key was not accepted. Enter another one.";
  els.keyInput.focus();
}

els.keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  state.apiKey = els.keyInput.value.trim();
  if (!state.apiKey) return;
  sessionStorage.setItem(KEY_STORAGE, state.apiKey);
  els.keyForm.hidden = true;
  const retry = state.retry;
  state.retry = null;
  if (retry) retry();
});

// ---------------------------------------------------------------- personas

async function loadPersonas() {
  try {
    const { personas } = await api("/v1/personas");
    state.personas = personas;
  } catch (error) {
    if (error.status === 401) return needKey(loadPersonas);
    els.select.innerHTML = "";
    els.select.append(new Option("Personas unavailable"));
    announce(`Could not load personas: ${error.message}`);
    return;
  }
  els.select.innerHTML = "";
  if (!state.personas.length) {
    els.select.append(new Option("No persona indexed yet"));
    return;
  }
  for (const persona of state.personas) els.select.append(new Option(persona.title, persona.slug));
  els.select.disabled = false;
  choosePersona(state.personas[0].slug, false);
}

function choosePersona(slug, announceChange = true) {
  const persona = state.personas.find((p) => p.slug === slug);
  if (!persona) return;
  state.persona = persona;
  els.select.value = slug;
  els.card.hidden = false;
  els.title.textContent = persona.title;
  els.aliases.textContent = persona.aliases.length ? `Also: ${persona.aliases.join(", ")}` : "";
  els.summary.textContent = persona.summary;
  els.question.placeholder = `Ask the ${persona.title}…`;
  showSuggestions(SUGGESTIONS[persona.slug] || SUGGESTIONS["*"]);
  if (announceChange && state.turns) {
    const note = element("p", "divider", `You are now talking to the ${persona.title}.`);
    els.log.append(note);
  }
  state.history = [];
}

function showSuggestions(questions) {
  els.suggestions.textContent = "";
  for (const text of questions) {
    const button = element("button", "chip", text);
    button.type = "button";
    button.addEventListener("click", () => ask(text));
    const item = element("li");
    item.append(button);
    els.suggestions.append(item);
  }
}

els.select.addEventListener("change", () => choosePersona(els.select.value));

// ---------------------------------------------------------------- one question and its answer

class Turn {
  constructor(question, persona) {
    this.question = question;
    this.persona = persona;
    this.node = element("article", "turn");
    this.node.setAttribute("aria-label", `Question ${++state.turns}`);

    const asked = element("div", "msg msg-user");
    asked.append(element("p", "who", "You"), element("div", "bubble", question));

    this.reply = element("div", "msg msg-persona");
    this.reply.setAttribute("aria-busy", "true");
    this.bubble = element("div", "bubble");
    this.text = element("div", "answer-text");
    this.text.innerHTML = '<span class="typing" aria-label="Thinking"><i></i><i></i><i></i></span>';
    this.bubble.append(this.text);
    this.reply.append(element("p", "who", persona ? persona.title : "Persona"), this.bubble);

    this.node.append(asked, this.reply);
    els.log.append(this.node);
    this.node.scrollIntoView({ block: "end", behavior: SCROLL });
  }

  stream(text) {
    const follow = nearBottom();
    this.text.innerHTML = streamingHtml(text);
    if (follow) window.scrollTo({ top: document.documentElement.scrollHeight });
  }

  finish(answer) {
    this.answer = answer;
    this.reply.setAttribute("aria-busy", "false");
    this.text.innerHTML = answerHtml(answer.answer, answer.citations);
    if (answer.searched_for && answer.searched_for !== answer.question) {
      this.bubble.prepend(element("p", "searched", `Read in context as: ${answer.searched_for}`));
    }
    this.passage = element("div", "passage");
    this.passage.hidden = true;
    this.passage.tabIndex = -1;
    this.passage.setAttribute("role", "region");
    if (!answer.grounded) this.notCovered(answer);
    else if (answer.confidence === "low") this.tentative();
    this.bubble.append(this.passage);
    if (answer.citations.length) this.sources(answer.citations);
    this.text.addEventListener("click", (event) => {
      const marker = event.target.closest("button.cite");
      if (marker) this.toggleCitation(Number(marker.dataset.n), marker);
    });
    reveal(this.reply);
    const sources = answer.citations.length;
    const closest = answer.confidence === "low" ? " The card's closest guidance, not an exact match." : "";
    announce(answer.grounded
      ? `Answer ready with ${sources} ${sources === 1 ? "source" : "sources"}.${closest}`
      : "Not covered by the card.");
  }

  fail(message) {
    this.reply.setAttribute("aria-busy", "false");
    this.reply.classList.add("msg-error");
    this.text.textContent = "";
    const alert = element("p", "error-text", message);
    alert.setAttribute("role", "alert");
    const retry = element("button", "button button-quiet", "Ask again");
    retry.type = "button";
    retry.addEventListener("click", () => {
      this.node.remove();
      ask(this.question);
    });
    this.text.append(alert, retry);
  }

  tentative() {
    this.reply.classList.add("low-confidence");
    this.bubble.prepend(element("p", "badge badge-low", "Closest guidance: not an exact match"));
  }

  notCovered(answer) {
    this.reply.classList.add("not-covered");
    const badge = element("p", "badge", "Not covered by the card");
    this.bubble.prepend(badge);
    if (!answer.nearest_sections.length) return;
    const nearest = element("section", "nearest");
    nearest.setAttribute("aria-label", "Closest sections of the card");
    nearest.append(element("h3", "small-heading", "Closest sections of the card"));
    const list = element("ul", "chips");
    for (const near of answer.nearest_sections) {
      const button = element("button", "chip", near.section);
      button.type = "button";
      button.setAttribute("aria-expanded", "false");
      button.addEventListener("click", () => this.toggleSection(near, button));
      const item = element("li");
      item.append(button);
      list.append(item);
    }
    nearest.append(list);
    this.bubble.append(nearest);
  }

  sources(citations) {
    const sources = element("section", "sources");
    sources.setAttribute("aria-label", "Sources");
    sources.append(element("h3", "small-heading", "Sources"));
    const list = element("ol", "source-list");
    for (const citation of citations) {
      const button = element("button", "source");
      button.type = "button";
      button.dataset.n = citation.n;
      button.setAttribute("aria-expanded", "false");
      button.append(element("span", "cite", String(citation.n)), element("span", "source-path", wherePath(citation)));
      button.addEventListener("click", () => this.toggleCitation(citation.n, button));
      const item = element("li");
      item.append(button);
      list.append(item);
    }
    sources.append(list);
    this.bubble.append(sources);
  }

  toggleCitation(n, opener) {
    if (this.openKey === `cite-${n}`) return this.closePassage();
    const citation = this.answer.citations.find((c) => c.n === n);
    this.showPassage(`cite-${n}`, opener, String(n), wherePath(citation), passageHtml(citation.text), citation.id);
    for (const button of this.bubble.querySelectorAll("button[data-n]")) {
      const open = Number(button.dataset.n) === n;
      button.setAttribute("aria-expanded", String(open));
      button.classList.toggle("is-open", open);
    }
  }

  async toggleSection(near, opener) {
    if (this.openKey === `section-${near.id}`) return this.closePassage();
    this.showPassage(`section-${near.id}`, opener, "§", near.section, '<p class="muted">Loading the section…</p>', near.id);
    opener.setAttribute("aria-expanded", "true");
    opener.classList.add("is-open");
    try {
      const html = passageHtml(await sectionText(this.answer, near));
      if (this.openKey !== `section-${near.id}`) return;
      this.passage.querySelector(".passage-body").innerHTML = html;
      reveal(this.passage);
    } catch (error) {
      if (error.status === 401) return needKey(() => this.toggleSection(near, opener));
      const body = this.passage.querySelector(".passage-body");
      body.textContent = "";
      body.append(element("p", "error-text", `Could not load the section: ${error.message}`));
    }
  }

  showPassage(key, opener, label, path, bodyHtml, id) {
    this.resetOpeners();
    this.openKey = key;
    this.opener = opener;
    const titleId = `passage-${state.turns}-${Math.random().toString(36).slice(2, 8)}`;
    this.passage.innerHTML = `
      <div class="passage-head">
        <span class="passage-n" aria-hidden="true">${escapeHtml(label)}</span>
        <p class="passage-path" id="${titleId}">${escapeHtml(path)}</p>
        <button type="button" class="passage-close" aria-label="Close passage">×</button>
      </div>
      <div class="passage-body">${bodyHtml}</div>
      <p class="passage-id"><code>${escapeHtml(id)}</code></p>`;
    this.passage.setAttribute("aria-labelledby", titleId);
    this.passage.hidden = false;
    this.passage.querySelector(".passage-close").addEventListener("click", () => this.closePassage());
    this.passage.onkeydown = (event) => {
      if (event.key === "Escape") this.closePassage();
    };
    this.passage.focus({ preventScroll: true });
    reveal(this.passage);
  }

  closePassage() {
    const opener = this.opener;
    this.passage.hidden = true;
    this.passage.innerHTML = "";
    this.openKey = null;
    this.opener = null;
    this.resetOpeners();
    if (opener && opener.isConnected) opener.focus();
  }

  resetOpeners() {
    for (const button of this.bubble.querySelectorAll("button[aria-expanded]")) {
      button.setAttribute("aria-expanded", "false");
      button.classList.remove("is-open");
    }
  }
}

const sectionCache = new Map();

/** The text of a card section: its own chunk when retrieval has it, else its passages joined. */
async function sectionText(answer, near) {
  const key = `${answer.persona}/${near.section}`;
  if (!sectionCache.has(key)) {
    const { results } = await api("/v1/retrieve", {
      query: answer.question, persona: answer.persona, k: 50, sections: [near.section],
    });
    const own = results.find((r) => r.id === near.id);
    sectionCache.set(key, own ? own.text : results.map((r) => r.text).join("\n\n"));
  }
  return sectionCache.get(key);
}

// ---------------------------------------------------------------- asking

async function ask(question) {
  question = question.trim();
  if (!question || state.controller) return;
  els.intro.hidden = true;
  const turn = new Turn(question, state.persona);
  const controller = new AbortController();
  state.controller = controller;
  setBusy(true);
  announce(`${state.persona ? state.persona.title : "The persona"} is answering…`);
  try {
    const response = await fetch("/v1/ask/stream", {
      method: "POST",
      headers: headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
      body: JSON.stringify({
        question, persona: state.persona ? state.persona.slug : null, history: state.history.slice(-HISTORY_MESSAGES),
      }),
      signal: controller.signal,
    });
    if (response.status === 401) {
      turn.node.remove();
      state.turns -= 1;
      needKey(() => ask(question));
      return;
    }
    if (!response.ok) throw await failure(response);
    await readAnswer(response, turn);
  } catch (error) {
    if (error.name === "AbortError") return;
    turn.fail(error instanceof TypeError
      ? "Could not reach the server. Check that it is running, then ask again."
      : error.message || "Something went wrong. Please ask again.");
  } finally {
    if (state.controller === controller) {
      state.controller = null;
      setBusy(false);
    }
  }
}

async function readAnswer(response, turn) {
  let text = "";
  let finished = false;
  for await (const { event, data } of sseEvents(response)) {
    if (event === "delta") {
      text += data.text;
      turn.stream(text);
    } else if (event === "answer") {
      turn.finish(data);
      state.history.push({ role: "user", content: turn.question }, { role: "assistant", content: data.answer });
      finished = true;
    } else if (event === "error") {
      throw new ApiError(data.detail || "The answer failed.", 500);
    } else if (event === "done") {
      break;
    }
  }
  if (!finished) throw new ApiError("The answer was cut off. Please ask again.", 0);
}

function setBusy(busy) {
  els.send.disabled = busy;
  els.send.textContent = busy ? "Answering…" : "Send";
  els.form.setAttribute("aria-busy", String(busy));
}

function announce(message) {
  els.status.textContent = message;
}

/** Scroll so the element is in view above the composer; its top first when it is taller than the room. */
function reveal(node) {
  const room = window.innerHeight - els.form.offsetHeight - 24;
  node.style.scrollMarginBottom = `${els.form.offsetHeight + 12}px`;
  node.scrollIntoView({ block: node.offsetHeight > room ? "start" : "nearest", behavior: SCROLL });
}

function nearBottom() {
  const root = document.documentElement;
  return root.scrollHeight - (root.scrollTop + window.innerHeight) < 160;
}

function startOver() {
  if (state.controller) state.controller.abort();
  state.controller = null;
  setBusy(false);
  els.log.innerHTML = "";
  state.turns = 0;
  state.history = [];
  els.intro.hidden = false;
  els.question.value = "";
  resize();
  announce("Conversation cleared.");
  els.question.focus();
}

function resize() {
  els.question.style.height = "auto";
  els.question.style.height = `${Math.min(els.question.scrollHeight, 200)}px`;
}

els.form.addEventListener("submit", (event) => {
  event.preventDefault();
  if (state.controller) return;
  const question = els.question.value;
  if (!question.trim()) return els.question.focus();
  els.question.value = "";
  resize();
  ask(question);
});

els.question.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    els.form.requestSubmit();
  }
});
els.question.addEventListener("input", resize);
els.startOver.addEventListener("click", startOver);


loadPersonas();
