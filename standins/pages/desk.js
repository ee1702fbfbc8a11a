"use strict";
// The agent desk. It reads tickets from /__demo__/desk once a second; its buttons call the stand-in's
// agent simulation (/__standin__/tickets/<id>/assign|reply|solve), which runs the installed triggers:
// Zendesk-signed webhooks to the gateway, exactly as a real agent's clicks do.

const ROLES = { "end-user": "end user", agent: "agent", admin: "API user" };
// Desk-specific bits come from the page: where tickets live and what closes one.
const TICKETS = document.body.dataset.ticketPath || "/agent/tickets/";
const SOLVE = document.body.dataset.solveAction || "solve";
const DONE = ["solved", "resolved", "closed"];
const VIAS = { api: "via API", web: "via web", email: "via email" };
let desk = { agents: [], tickets: [] };
let selected = Number((location.pathname.match(/\/tickets\/(\d+)/) || [])[1]) || null;
let drawnList = "";
let drawnTicket = "";

// Numeric agent ids (Zendesk, Freshdesk) stay numbers; others (Jira account ids) stay strings.
const agentId = () => (/^\d+$/.test($("#agent").value) ? Number($("#agent").value) : $("#agent").value);
const current = () => desk.tickets.find((t) => t.id === selected);

function drawAgents() {
  const select = $("#agent");
  const key = desk.agents.map((a) => a.id).join();
  if (select.dataset.key === key) return;
  const chosen = select.value;
  select.dataset.key = key;
  select.replaceChildren(...desk.agents.map((a) => new Option(a.name, a.id)));
  if (desk.agents.some((a) => String(a.id) === chosen)) select.value = chosen;
}

function drawList() {
  $("#no-tickets").hidden = desk.tickets.length > 0;
  const key = JSON.stringify(desk.tickets.map((t) => [t.id, t.status, t.assignee, t.id === selected]));
  if (key === drawnList) return;
  drawnList = key;
  $("#tickets").replaceChildren(
    ...desk.tickets.map((ticket) => {
      const item = element("li", ticket.id === selected ? "selected" : "");
      item.dataset.id = ticket.id;
      const link = element("a");
      link.href = `${TICKETS}${ticket.id}`;
      link.addEventListener("click", (event) => {
        event.preventDefault();
        openTicket(ticket.id);
      });
      const badge = element("span", `badge ${ticket.status}`, ticket.status);
      link.append(
        element("span", "who", `#${ticket.id} · `),
        badge,
        element("span", "subject", ticket.subject),
        element("span", "who", `${ticket.requester || "?"} · ${ticket.assignee ? "assigned to " + ticket.assignee : "unassigned"}`),
      );
      item.append(link);
      return item;
    }),
  );
}

function drawComment(comment, index) {
  const role = comment.role === "agent" ? "agent" : "";
  const item = element("li", index === 0 ? "transcript" : role);
  const meta = element("div", "meta");
  meta.append(
    element("b", "", comment.author),
    ` · ${ROLES[comment.role] || comment.role} · ${VIAS[comment.via] || comment.via} · ${clock(comment.at)}`,
    comment.public ? "" : " · internal note",
    index === 0 ? " · ticket description (the bot's transcript)" : "",
  );
  item.append(meta, element("pre", "", comment.body));
  if (comment.attachments.length) {
    const files = element("div", "attachments");
    for (const attachment of comment.attachments) {
      const link = element("a", "", `📎 ${attachment.name}`);
      link.href = attachment.url;
      link.target = "_blank";
      files.append(link);
    }
    item.append(files);
  }
  return item;
}

function drawTicket() {
  const ticket = current();
  $("#ticket").hidden = !ticket;
  $("#no-ticket").hidden = Boolean(ticket);
  if (!ticket) return;
  const done = DONE.includes(ticket.status);
  $("#assign").disabled = done || ticket.assigneeId === agentId();
  $("#solve").disabled = done;
  $("#reply-send").disabled = done;
  $("#reply-body").disabled = done;
  const key = JSON.stringify([ticket, agentId()]);
  if (key === drawnTicket) return;
  drawnTicket = key;
  $("#ticket-subject").textContent = `#${ticket.id} ${ticket.subject}`;
  $("#ticket-status").textContent = ticket.status;
  $("#ticket-status").className = `badge ${ticket.status}`;
  $("#ticket-priority").textContent = ticket.priority || "-";
  $("#ticket-requester").textContent = ticket.requester || "-";
  $("#ticket-assignee").textContent = ticket.assignee || "unassigned";
  $("#comments").replaceChildren(...ticket.comments.map(drawComment));
  $("#webhooks").replaceChildren(
    ...ticket.webhooks.map((hook) => {
      const item = element("li");
      const ok = hook.status !== null && hook.status < 300;
      item.append(
        element("span", `badge ${ok ? "ok" : "bad"}`, hook.status ?? "error"),
        element("b", "", hook.type),
        element("span", "mono", hook.attempt > 1 ? `attempt ${hook.attempt}` : ""),
        element("span", "when", clock(hook.at)),
      );
      return item;
    }),
  );
}

function draw() {
  if (selected === null && desk.tickets.length) openTicket(desk.tickets[0].id, true);
  drawAgents();
  drawList();
  drawTicket();
}

function openTicket(ticketId, replace = false) {
  selected = ticketId;
  const path = `${TICKETS}${ticketId}`;
  if (location.pathname !== path) history[replace ? "replaceState" : "pushState"]({}, "", path);
  $("#error").textContent = "";
  draw();
}

async function refresh() {
  try {
    desk = await call("GET", "/__demo__/desk");
    draw();
  } catch (error) {
    $("#error").textContent = `Lost the demo (${error.message}); is it still running?`;
  }
}

async function agentAction(action, body = {}) {
  $("#error").textContent = "";
  try {
    await call("POST", `/__standin__/tickets/${selected}/${action}`, { agent_id: agentId(), ...body });
    await refresh();
    return true;
  } catch (error) {
    $("#error").textContent = error.message;
    return false;
  }
}

$("#assign").addEventListener("click", () => agentAction("assign"));
$("#solve").addEventListener("click", () => agentAction(SOLVE));
$("#agent").addEventListener("change", draw);
// A file as the agent simulation takes it: {filename, content_type, content (base64)}.
async function attachmentOf(file) {
  const bytes = new Uint8Array(await file.arrayBuffer());
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return { filename: file.name, content_type: file.type || "application/octet-stream", content: btoa(binary) };
}

$("#reply-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const body = $("#reply-body").value.trim();
  const attachments = await Promise.all([...$("#reply-files").files].map(attachmentOf));
  if (!body && !attachments.length) return;
  if (await agentAction("reply", { body, attachments })) {
    $("#reply-body").value = "";
    $("#reply-files").value = "";
  }
});
window.addEventListener("popstate", () => {
  selected = Number((location.pathname.match(/\/tickets\/(\d+)/) || [])[1]) || null;
  draw();
});

refresh();
setInterval(refresh, 1000);
