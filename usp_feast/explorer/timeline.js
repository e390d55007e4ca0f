/* Page 1: one user's signals, current sessions and segment memberships. */
"use strict";

const form = document.getElementById("lookup");
const input = document.getElementById("user-id");
const limitInput = document.getElementById("limit");
const statusLine = document.getElementById("status");
const errorBox = document.getElementById("error");
const results = document.getElementById("results");
let lookups = 0; // a newer lookup wins over one still waiting for its answers

form.addEventListener("submit", (event) => {
  event.preventDefault();
  show(input.value.trim(), limitInput.value);
});

// ?user=42 opens a user directly (links can be shared).
const asked = new URLSearchParams(location.search);
if (asked.get("user")) {
  input.value = asked.get("user");
  if (asked.get("limit")) limitInput.value = asked.get("limit");
  show(input.value.trim(), limitInput.value);
}

async function show(user, limit) {
  if (!user) return;
  const lookup = ++lookups;
  history.replaceState(null, "", `?user=${encodeURIComponent(user)}&limit=${limit}`);
  statusLine.textContent = `Loading user ${user}…`;
  statusLine.dataset.state = "loading";
  showErrors(errorBox, []);
  results.hidden = true;

  const definitions = await getJSON("/v1/definitions");
  if (lookup !== lookups) return;
  if (!definitions.ok) {
    statusLine.textContent = "";
    statusLine.dataset.state = "error";
    showErrors(errorBox, [refusal(definitions)]);
    return;
  }
  const defs = definitions.body;
  const signals = [...defs.signals, ...defs.joins];
  const who = `/v1/users/${encodeURIComponent(user)}`;
  const [events, sessions, members, segments] = await Promise.all([
    Promise.all(signals.map((s) => getJSON(`${who}/signals/${s.name}?limit=${limit}`))),
    Promise.all(defs.sessions.map((s) => getJSON(`${who}/sessions/${s.name}?recent=3`))),
    getJSON(`${who}/segments`),
    Promise.all(defs.segments.map((s) => getJSON(`${who}/segments/${s.name}`))),
  ]);
  if (lookup !== lookups) return;

  const failed = [...events, ...sessions, members, ...segments].filter((r) => !r.ok);
  showErrors(errorBox, failed.map(refusal));
  if (failed.length === events.length + sessions.length + 1 + segments.length) {
    statusLine.textContent = `Nothing to show for user ${user}.`;
    statusLine.dataset.state = "error";
    return;
  }

  const eventCount = events.reduce((n, r) => n + (r.ok ? r.body.count : 0), 0);
  const open = sessions.filter((r) => r.ok && r.body.current).length;
  const closed = sessions.reduce((n, r) => n + (r.ok ? r.body.recent.length : 0), 0);
  const memberships = members.ok ? members.body.segments.length : 0;
  const everInSegment = segments.some((r) => r.ok && r.body.change);
  if (!failed.length && !eventCount && !open && !closed && !everInSegment) {
    statusLine.textContent =
      `No data for user ${user}: no events in any signal's retention, no session and no ` +
      "segment membership. Check the id, or that the jobs are running (Definitions & jobs).";
    statusLine.dataset.state = "empty";
    return;
  }
  statusLine.dataset.state = "found";
  statusLine.textContent =
    `User ${user}: ${plural(eventCount, "event")} in ${plural(signals.length, "signal")}, ` +
    `${plural(open, "open session")}, member of ${plural(memberships, "segment")}.`;

  document.getElementById("sessions").replaceChildren(
    ...defs.sessions.map((spec, i) => sessionCard(spec, sessions[i])),
  );
  document.getElementById("segments").replaceChildren(segmentTable(defs.segments, members, segments));
  document.getElementById("signals").replaceChildren(
    ...signals.map((spec, i) => signalSection(spec, events[i], limit)),
  );
  results.hidden = false;
}

function signalSection(spec, result, limit) {
  const title = h(
    "h3",
    {},
    spec.name,
    " ",
    h("span", { class: `badge ${spec.kind}` }, spec.kind),
    " ",
    h("small", { "data-testid": "signal-count" }, result.ok ? plural(result.body.count, "event") : "error"),
  );
  const attrs = { class: "signal", "data-testid": `signal-${spec.name}`, "data-signal": spec.name };
  if (!result.ok) return h("section", attrs, title, h("p", { class: "error" }, refusal(result)));
  if (!result.body.events.length) {
    const within = spec.retention ? ` within its ${spec.retention} retention` : "";
    return h("section", { ...attrs, class: "signal empty" }, title, h("p", { class: "muted" }, `No events${within}.`));
  }
  const fields = Object.keys(spec.fields);
  const rows = result.body.events.map((event) =>
    h(
      "tr",
      { "data-testid": "event-row", "data-event-id": event.event_id },
      timeCell(event.event_ts, "event-time"),
      timeCell(event.processed_at, "processed-at"),
      h(
        "td",
        { class: event.versions > 1 ? "num replayed" : "num", "data-testid": "versions",
          title: event.versions > 1 ? "replayed or corrected: the newest version is shown" : null },
        event.versions,
      ),
      h("td", { class: "id", "data-testid": "event-id" }, event.event_id),
      h("td", { class: "fields", "data-testid": "event-fields" },
        fields.map((name) => h("span", { class: "field", "data-field": name },
          h("b", {}, name), " ", shown(event[name])))),
    ),
  );
  const more = result.body.count >= Number(limit)
    ? h("p", { class: "muted" }, `Showing the newest ${limit}; older events are not shown.`)
    : null;
  return h(
    "section",
    attrs,
    title,
    table(["event time", "processed at", "versions", "event id", "fields"], rows, { class: "events" }),
    more,
  );
}

function sessionCard(spec, result) {
  const attrs = { class: "card", "data-testid": `session-${spec.name}`, "data-session": spec.name };
  const title = h("h3", {}, spec.name, " ", h("span", { class: "badge" }, spec.kind));
  const summary = h("p", { class: "muted" }, spec.summary);
  if (!result.ok) return h("article", attrs, title, h("p", { class: "error" }, refusal(result)));
  const { current, recent } = result.body;
  const lastClosed = recent.length
    ? h("p", { class: "muted", "data-testid": "session-recent" },
        `${recent.length} closed recently; the newest ended ${recent[0].expires_at}.`)
    : h("p", { class: "muted", "data-testid": "session-recent" }, "None closed recently.");
  if (!current) {
    return h("article", attrs, title, summary,
      h("p", { "data-testid": "session-state" }, `Nothing open now.`), lastClosed);
  }
  const rows = [
    ["started", current.started_at],
    ["last event", current.last_event_at],
    ["expires", current.expires_at],
  ].map(([label, at]) => h("tr", {}, h("th", { scope: "row" }, label), timeCell(at, null)));
  const values = Object.entries(current.values).map(([name, value]) =>
    h("tr", { "data-testid": "session-value", "data-name": name },
      h("th", { scope: "row" }, name), h("td", {}, shown(value))));
  return h(
    "article",
    attrs,
    title,
    summary,
    h("p", { "data-testid": "session-state", class: "open" }, "Open now"),
    h("table", { class: "pairs" }, h("tbody", {}, rows, values)),
    lastClosed,
  );
}

function segmentTable(specs, members, segments) {
  if (!members.ok) return h("p", { class: "error" }, refusal(members));
  const current = new Map(members.body.segments.map((m) => [m.segment, m]));
  const rows = specs.map((spec, i) => {
    const result = segments[i];
    const known = current.get(spec.name) || (result.ok ? result.body : null);
    const state = current.has(spec.name) ? "member"
      : !result.ok ? "error"
      : known && known.change ? "not a member"
      : "never a member";
    return h(
      "tr",
      { "data-testid": "segment-row", "data-segment": spec.name, "data-state": state },
      h("td", {}, spec.name),
      h("td", { class: state === "member" ? "member" : "muted" }, state),
      timeCell(known && known.change ? known.entered_at : null, "entered-at"),
      timeCell(known && known.change ? known.expires_at : null, "expires-at"),
      h("td", {}, known && known.change ? `${known.change}: ${known.reason}` : result.ok ? "—" : refusal(result)),
      timeCell(known && known.change ? known.changed_at : null, "changed-at"),
    );
  });
  return table(["segment", "now", "entered", "expires", "last change", "changed at"], rows, { class: "segments" });
}
