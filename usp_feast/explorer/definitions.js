/* Page 2: the repository's definitions and the health of each running job. */
"use strict";

const errorBox = document.getElementById("error");
const REFRESH_MS = 5000; // job rates need two samples: the first refresh fills them in

loadDefinitions();
loadJobs();
setInterval(loadJobs, REFRESH_MS);

async function loadDefinitions() {
  const result = await getJSON("/v1/definitions");
  if (!result.ok) {
    showErrors(errorBox, [refusal(result)]);
    return;
  }
  const { signals, joins, segments, sessions } = result.body;
  document.getElementById("signals").replaceChildren(table(
    ["signal", "description", "owner", "topic", "fields", "retention", "ttl", "writes to"],
    signals.map((s) => row(s,
      h("td", {}, s.description),
      h("td", {}, s.owner),
      h("td", { class: "id" }, s.source.topic),
      h("td", {}, fieldList(s.fields)),
      h("td", {}, s.retention),
      ttlCell(s),
      h("td", { class: "id" }, s.signal_topic, h("br"), s.dead_letter_topic),
    )),
    { class: "definitions" },
  ));
  document.getElementById("joins").replaceChildren(table(
    ["join", "description", "owner", "joins", "fields", "state ttl", "retention", "ttl"],
    joins.map((j) => row(j,
      h("td", {}, j.description),
      h("td", {}, j.owner),
      h("td", {}, j.summary),
      h("td", {}, fieldList(j.fields)),
      h("td", {}, j.state_ttl),
      h("td", {}, j.retention),
      ttlCell(j),
    )),
    { class: "definitions" },
  ));
  document.getElementById("segments").replaceChildren(table(
    ["segment", "description", "owner", "enters on", "exits on", "expires after", "retention"],
    segments.map((s) => row(s,
      h("td", {}, s.description),
      h("td", {}, s.owner),
      h("td", {}, condition(s.trigger)),
      h("td", {}, s.exit.length ? s.exit.map(condition).join(", ") : "—"),
      h("td", {}, s.expires_after, s.max_membership ? ` (at most ${s.max_membership})` : ""),
      h("td", {}, s.retention),
    )),
    { class: "definitions" },
  ));
  document.getElementById("sessions").replaceChildren(table(
    ["engagement", "description", "owner", "what", "features", "retention"],
    sessions.map((s) => row(s,
      h("td", {}, s.description),
      h("td", {}, s.owner),
      h("td", {}, s.summary),
      h("td", {}, fieldList(s.features)),
      h("td", {}, s.retention),
    )),
    { class: "definitions" },
  ));
}

function row(spec, ...cells) {
  return h(
    "tr",
    { "data-testid": "definition-row", "data-name": spec.name, "data-kind": spec.kind },
    h("td", { class: "name" }, spec.name, " ", h("span", { class: "badge" }, spec.kind)),
    cells,
  );
}

function ttlCell(spec) {
  return h("td", {}, spec.online_ttl, spec.ttl ? "" : h("span", { class: "muted" }, " (retention)"));
}

function condition(c) {
  return c.where ? `${c.signal} where ${c.where}` : c.signal;
}

function fieldList(fields) {
  return h("ul", { class: "fields" },
    Object.entries(fields).map(([name, type]) => h("li", {}, h("b", {}, name), " ", type)));
}

async function loadJobs() {
  const box = document.getElementById("jobs");
  const result = await getJSON("/v1/jobs");
  document.getElementById("jobs-updated").textContent =
    `updated ${new Date().toISOString().slice(11, 19)} UTC, every ${REFRESH_MS / 1000} s`;
  if (!result.ok) {
    box.replaceChildren(h("p", { class: "error", "data-testid": "jobs-error" }, refusal(result)));
    return;
  }
  if (!result.body.jobs.length) {
    box.replaceChildren(h("p", { class: "muted", "data-testid": "no-jobs" },
      "No job is running on this machine (start them with usp run)."));
    return;
  }
  const latencies = ["event", "ingestion", "transform", "job"];
  const rows = [];
  for (const job of result.body.jobs) {
    rows.push(h(
      "tr",
      { class: "job", "data-testid": "job-row", "data-job": job.job, "data-running": job.running },
      h("td", { colspan: 3 }, h("b", {}, job.job), " ",
        h("span", { class: job.running ? "badge ok" : "badge bad", "data-testid": "job-state" },
          job.running ? "running" : "not answering"),
        job.error ? h("span", { class: "muted" }, ` ${job.error}`) : null),
      h("td", { colspan: 2 }, "started ", job.started_at || "—"),
      h("td", { colspan: latencies.length }, "last checkpoint ",
        h("span", { "data-testid": "checkpoint-age" },
          job.last_checkpoint_age_s === null ? "—" : `${job.last_checkpoint_age_s.toFixed(1)} s ago`)),
    ));
    for (const p of job.pipelines) {
      rows.push(h(
        "tr",
        { "data-testid": "pipeline-row", "data-job": job.job, "data-pipeline": p.pipeline },
        h("td", { class: "name" }, p.pipeline),
        h("td", {}, p.kind),
        h("td", { class: "num" }, rate(p.events_per_s)),
        h("td", { class: "num" }, rate(p.dead_letters_per_s)),
        h("td", { class: "num" }, p.lag === null ? "—" : p.lag),
        latencies.map((kind) => h("td", { class: "num" }, latency(p.latency_ms[kind]))),
      ));
    }
  }
  box.replaceChildren(table(
    ["pipeline", "kind", "events/s", "dead letters/s", "lag",
      ...latencies.map((k) => `${k} latency p50 / p99`)],
    rows,
    { class: "jobs" },
  ));
}

function rate(value) {
  return value === null || value === undefined ? "—" : value.toFixed(1);
}

function latency(q) {
  if (!q || (q.p50 === null && q.p99 === null)) return "—";
  return `${duration(q.p50)} / ${duration(q.p99)}`;
}

/** Milliseconds as "0.25 ms", "75 ms" or "180 s". */
function duration(ms) {
  if (ms === null) return "—";
  if (ms < 10) return `${ms.toFixed(2)} ms`;
  if (ms < 10000) return `${ms.toFixed(0)} ms`;
  return `${(ms / 1000).toFixed(0)} s`;
}
