"use strict";
// The end-user chat. The stand-in plays the bot behind /__demo__/chats: it answers by itself, and
// calls the gateway (createUser, startHitl, hitl messages, stopHitl) once a human is asked for.
// The page only draws what that API returns, and polls it once a second for the agent's side.

const STORAGE_KEY = "hitl-demo-chat";
const STATUS = { bot: "Chatting with the demo bot", waiting: "Waiting for an agent…" };
let chat = null;
let drawnEntries = "";
let drawnTrace = "";

function textOf(entry) {
  const p = entry.payload || {};
  return p.text || p.markdown || p.imageUrl || p.audioUrl || p.videoUrl || p.fileUrl || `[${entry.type}]`;
}

// Images are shown, other media are links; both name where the file lives (Botpress's file store).
function drawBubble(entry) {
  const bubble = element("div", "bubble");
  const p = entry.payload || {};
  const url = p.imageUrl || p.fileUrl || p.audioUrl || p.videoUrl;
  if (!url || !/^https?:/.test(url)) {
    bubble.textContent = textOf(entry);
    return bubble;
  }
  const link = element("a", "attachment", p.title || decodeURIComponent(url.split("?")[0].split("/").pop()));
  link.href = url;
  link.target = "_blank";
  link.rel = "noopener";
  if (entry.type === "image") {
    const image = element("img", "attachment-image");
    image.src = url;
    image.alt = link.textContent;
    bubble.append(image, element("br"));
  }
  bubble.append(link);
  return bubble;
}

function readBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
    reader.onerror = () => reject(new Error(`Could not read ${file.name}`));
    reader.readAsDataURL(file);
  });
}

function drawEntry(entry) {
  const item = element("li", `entry ${entry.kind}`);
  item.dataset.id = entry.id;
  if (entry.kind === "notice") {
    item.textContent = textOf(entry);
    return item;
  }
  const author = { user: chat.name, bot: "Demo bot", agent: entry.author }[entry.kind];
  item.append(element("div", "meta", `${author} · ${clock(entry.at)}`), drawBubble(entry));
  for (const option of entry.payload.options || []) {
    const button = element("button", "choice", option.label);
    button.type = "button";
    button.addEventListener("click", handoff);
    item.append(button);
  }
  return item;
}

function drawTraceItem(item) {
  const li = element("li", item.direction);
  const line = element("div", "line");
  const status = item.status === undefined ? "" : ` · ${item.status ?? "no answer"}`;
  line.append(
    element("span", "arrow", item.direction === "out" ? "→" : "←"),
    element("b", "", item.title + status),
    element("span", "when", clock(item.at)),
  );
  const details = element("details");
  const shown = item.direction === "out" ? { request: item.request, response: item.response } : item.request;
  details.append(element("summary", "", "JSON"), element("pre", "", JSON.stringify(shown, null, 2)));
  li.append(line, element("div", "what mono", item.what), details);
  return li;
}

function draw(view) {
  chat = view;
  document.body.dataset.mode = chat.mode;
  $("#status").textContent = chat.mode === "agent" ? `Chatting with ${chat.agent}` : STATUS[chat.mode];
  $("#handoff").hidden = chat.mode !== "bot";
  $("#handoff").disabled = chat.busy;
  $("#end-session").hidden = chat.mode === "bot";
  for (const input of [$("#name"), $("#email")]) input.disabled = chat.mode !== "bot";
  for (const button of document.querySelectorAll(".choice")) button.disabled = chat.mode !== "bot" || chat.busy;

  const entries = chat.entries.map((e) => e.id).join();
  if (entries !== drawnEntries) {
    drawnEntries = entries;
    const timeline = $("#timeline");
    timeline.replaceChildren(...chat.entries.map(drawEntry));
    timeline.scrollTop = timeline.scrollHeight;
    for (const button of timeline.querySelectorAll(".choice")) button.disabled = chat.mode !== "bot" || chat.busy;
  }
  const trace = chat.trace.map((c) => c.at + c.title).join();
  if (trace !== drawnTrace) {
    drawnTrace = trace;
    $("#trace").replaceChildren(...chat.trace.slice().reverse().map(drawTraceItem));
  }
}

async function act(method, path, body) {
  $("#error").textContent = "";
  try {
    draw(await call(method, path, body));
  } catch (error) {
    $("#error").textContent = error.message;
  }
}

function handoff() {
  return act("POST", `/__demo__/chats/${chat.id}/handoff`, { name: $("#name").value, email: $("#email").value });
}

async function start() {
  const saved = sessionStorage.getItem(STORAGE_KEY);
  if (saved) {
    try {
      draw(await call("GET", `/__demo__/chats/${saved}`));
      return;
    } catch (error) {
      sessionStorage.removeItem(STORAGE_KEY); // the demo was restarted: start a new chat
    }
  }
  const view = await call("POST", "/__demo__/chats", { name: $("#name").value, email: $("#email").value });
  sessionStorage.setItem(STORAGE_KEY, view.id);
  drawnEntries = drawnTrace = "";
  draw(view);
}

async function refresh() {
  if (!chat) return;
  try {
    draw(await call("GET", `/__demo__/chats/${chat.id}`));
  } catch (error) {
    $("#error").textContent = `Lost the demo (${error.message}); is it still running?`;
  }
}

$("#composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("#message-input");
  const text = input.value.trim();
  if (!text || !chat) return;
  input.value = "";
  act("POST", `/__demo__/chats/${chat.id}/messages`, { text });
});
$("#attach").addEventListener("click", () => $("#attachment").click());
$("#attachment").addEventListener("change", async () => {
  const file = $("#attachment").files[0];
  $("#attachment").value = "";
  if (!file || !chat) return;
  try {
    const data = await readBase64(file);
    await act("POST", `/__demo__/chats/${chat.id}/attachments`, {
      name: file.name,
      contentType: file.type || "application/octet-stream",
      data,
    });
  } catch (error) {
    $("#error").textContent = error.message;
  }
});
$("#handoff").addEventListener("click", handoff);
$("#end-session").addEventListener("click", () => act("POST", `/__demo__/chats/${chat.id}/end`));
$("#new-chat").addEventListener("click", () => {
  sessionStorage.removeItem(STORAGE_KEY);
  start();
});

start().catch((error) => ($("#error").textContent = error.message));
setInterval(refresh, 1000);
