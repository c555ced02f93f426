// Live updates by short polling of the JSON API: the jobs table and a job's status and log.
"use strict";

const POLL_MS = 1000;
const FINISHED = ["succeeded", "failed", "cancelled"];

function cell(text, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  td.textContent = text == null ? "" : String(text);
  return td;
}

function progressCell(job) {
  const td = cell("", "progress");
  if (job.status === "running") {
    const bar = document.createElement("progress");
    bar.value = job.progress.done;
    bar.max = job.progress.total || 1;
    const message = document.createElement("span");
    message.className = "message";
    message.textContent = " " + (job.progress.message || "");
    td.append(bar, message);
  }
  return td;
}

function jobRow(job) {
  const tr = document.createElement("tr");
  tr.dataset.id = job.id;
  const idCell = document.createElement("td");
  const link = document.createElement("a");
  link.href = "/jobs/" + encodeURIComponent(job.id);
  link.textContent = job.id.slice(0, 8);
  idCell.append(link);
  tr.append(idCell, cell(job.kind), cell(job.status, "status status-" + job.status), progressCell(job),
            cell(job.params.prompt, "prompt"), cell(job.queue), cell(job.submitted_at));
  return tr;
}

async function getJson(url) {
  const response = await fetch(url, {credentials: "same-origin", headers: {Accept: "application/json"}});
  if (!response.ok) throw new Error(url + ": " + response.status);
  return response.json();
}

function pollJobs(table) {
  const body = table.tBodies[0];
  const tick = async () => {
    try {
      const jobs = await getJson(table.dataset.poll);
      if (jobs.length) body.replaceChildren(...jobs.map(jobRow));
    } catch (error) { /* the next tick tries again */ }
    setTimeout(tick, POLL_MS);
  };
  setTimeout(tick, POLL_MS);
}

function pollJob(section) {
  const status = document.getElementById("job-status");
  const progress = document.getElementById("job-progress");
  const tick = async () => {
    try {
      const job = await getJson(section.dataset.poll);
      status.textContent = job.status;
      status.className = "status status-" + job.status;
      progress.replaceChildren(...progressCell(job).childNodes);
      if (FINISHED.includes(job.status) && section.dataset.finished === "no") {
        window.location.reload();  // the finished job's artifacts, result and charts
        return;
      }
    } catch (error) { /* the next tick tries again */ }
    setTimeout(tick, POLL_MS);
  };
  setTimeout(tick, POLL_MS);
}

function tailLog(log) {
  const tick = async () => {
    try {
      const lines = await getJson(log.dataset.poll + "?after=" + encodeURIComponent(log.dataset.after));
      for (const line of lines) {
        log.append(document.createTextNode(line.level + " " + line.message + "\n"));
        log.dataset.after = line.id;
      }
    } catch (error) { /* the next tick tries again */ }
    setTimeout(tick, POLL_MS);
  };
  setTimeout(tick, POLL_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  const jobs = document.getElementById("jobs");
  if (jobs) pollJobs(jobs);
  const job = document.getElementById("job");
  if (job && job.dataset.finished === "no") pollJob(job);
  const log = document.getElementById("log");
  if (log && job && job.dataset.finished === "no") tailLog(log);
});
