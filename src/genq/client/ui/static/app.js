// The dashboard's live parts: short polling of the JSON API (jobs table, a job's status, preview and log),
// charts drawn with uPlot (vendored) from the metric endpoints, the lightbox, copy buttons, relative times.
"use strict";

const POLL_MS = 1000;
const FINISHED = ["succeeded", "failed", "cancelled"];
const STEP_INCREMENTS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000];  // whole steps
const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];

// -- readable values (as the server renders them: genq.client.ui.readable) ---------------------------
function secondsText(seconds) {
  if (seconds < 10) return seconds.toFixed(1) + " s";
  const whole = Math.round(seconds);
  if (whole < 60) return whole + " s";
  if (whole < 3600) return Math.floor(whole / 60) + " min " + (whole % 60) + " s";
  const pad = (n) => String(n).padStart(2, "0");
  if (whole < 86400) return Math.floor(whole / 3600) + " h " + pad(Math.floor(whole % 3600 / 60)) + " min";
  return Math.floor(whole / 86400) + " d " + pad(Math.floor(whole % 86400 / 3600)) + " h";
}

function agoText(iso) {
  const seconds = (Date.now() - Date.parse(iso)) / 1000;
  if (seconds < 0) return "in " + secondsText(-seconds);
  if (seconds < 5) return "just now";
  if (seconds < 60) return Math.floor(seconds) + " s ago";
  if (seconds < 3600) return Math.floor(seconds / 60) + " min ago";
  return secondsText(seconds) + " ago";
}

function exactText(iso) {
  return new Date(iso).toISOString().slice(0, 19).replace("T", " ") + " UTC";
}

function timeElement(iso) {
  if (!iso) return document.createTextNode("-");
  const time = document.createElement("time");
  time.dateTime = iso;
  time.title = exactText(iso);
  time.textContent = agoText(iso);
  return time;
}

function runTimeText(job) {
  if (!job.started_at) return "";
  if (job.status === "running") return "running for " + secondsText(Math.max((Date.now() - Date.parse(job.started_at)) / 1000, 0));
  if (!job.finished_at) return "";
  return "took " + secondsText(Math.max((Date.parse(job.finished_at) - Date.parse(job.started_at)) / 1000, 0));
}

function numberText(value) {
  if (typeof value !== "number" || Number.isInteger(value)) return String(value);
  return String(Number(value.toPrecision(6)));
}

function refreshTimes() {
  for (const time of document.querySelectorAll("time[datetime]")) time.textContent = agoText(time.dateTime);
}

// -- the jobs table ---------------------------------------------------------------------------------
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

function previewUrl(job) {
  return "/jobs/" + encodeURIComponent(job.id) + "/preview.png?at=" + encodeURIComponent(job.preview_at);
}

function jobRow(job, checked) {
  const tr = document.createElement("tr");
  tr.dataset.id = job.id;
  const box = document.createElement("input");
  box.type = "checkbox";
  box.name = "job";
  box.value = job.id;
  box.checked = checked.has(job.id);
  const boxCell = cell("");
  boxCell.append(box);
  const idCell = cell("");
  const link = document.createElement("a");
  link.href = "/jobs/" + encodeURIComponent(job.id);
  const code = document.createElement("code");
  code.textContent = job.id.slice(0, 8);
  link.append(code);
  idCell.append(link);
  const preview = cell("", "preview");
  if (job.preview_at && job.status === "running") {
    const image = document.createElement("img");
    image.className = "thumb";
    image.alt = "preview";
    image.src = previewUrl(job);
    preview.append(image);
  }
  const submitted = cell("");
  submitted.append(timeElement(job.submitted_at));
  tr.append(boxCell, idCell, cell(job.kind), cell(job.status, "status status-" + job.status), progressCell(job), preview,
            cell(job.params.prompt, "prompt"), cell(job.queue), submitted, cell(runTimeText(job), "run"));
  return tr;
}

async function getJson(url) {
  const response = await fetch(url, {credentials: "same-origin", headers: {Accept: "application/json"}});
  if (!response.ok) throw new Error(url + ": " + response.status);
  return response.json();
}

function every(ms, action) {
  const tick = async () => {
    let again = true;
    try { again = (await action()) !== false; } catch (error) { /* the next tick tries again */ }
    if (again) setTimeout(tick, ms);
  };
  setTimeout(tick, ms);
}

function pollJobs(table) {
  const body = table.tBodies[0];
  every(POLL_MS, async () => {
    const jobs = await getJson(table.dataset.poll);
    const checked = new Set([...body.querySelectorAll("input[name=job]:checked")].map((box) => box.value));
    if (jobs.length) body.replaceChildren(...jobs.map((job) => jobRow(job, checked)));
  });
}

// -- a job's page -----------------------------------------------------------------------------------
function pollJob(section) {
  const status = document.getElementById("job-status");
  const progress = document.getElementById("job-progress");
  const run = document.getElementById("job-run");
  const figure = document.getElementById("preview");
  const preview = document.getElementById("preview-image");
  const update = async () => {
    const job = await getJson(section.dataset.poll);
    status.textContent = job.status;
    status.className = "status status-" + job.status;
    progress.replaceChildren(...progressCell(job).childNodes);
    run.textContent = runTimeText(job);
    if (job.preview_at && job.preview_at !== section.dataset.previewAt && !FINISHED.includes(job.status)) {
      section.dataset.previewAt = job.preview_at;
      preview.src = previewUrl(job);
      figure.hidden = false;
    }
    if (FINISHED.includes(job.status) && section.dataset.finished === "no") {
      window.location.reload();  // the finished job's results, charts and files
      return false;
    }
  };
  if (window.EventSource && section.dataset.events) followEvents(section.dataset.events, update);
  else every(POLL_MS, update);
}

// Run `update` on every event of the server's stream (state changes, progress, the end) rather than
// polling: one at a time, once more when events came while it ran; the stream is closed when `update`
// says it is done. EventSource reconnects by itself after a drop or the stream's end.
function followEvents(url, update) {
  const source = new EventSource(url);
  let running = false, again = false;
  const refresh = async () => {
    if (running) { again = true; return; }
    running = true;
    try {
      do {
        again = false;
        if ((await update()) === false) { source.close(); return; }
      } while (again);
    } catch (error) { /* the next event tries again */ } finally { running = false; }
  };
  for (const name of ["state", "progress", "end"]) source.addEventListener(name, refresh);
}

function tailLog(log) {
  every(POLL_MS, async () => {
    const lines = await getJson(log.dataset.poll + "?after=" + encodeURIComponent(log.dataset.after));
    if (lines.length && log.dataset.empty === "yes") {
      log.replaceChildren();
      log.dataset.empty = "no";
    }
    for (const line of lines) {
      log.append(document.createTextNode(line.level + " " + line.message + "\n"));
      log.dataset.after = line.id;
    }
  });
}

// -- charts -----------------------------------------------------------------------------------------
function themeColor(name, fallback) {
  return getComputedStyle(document.body).getPropertyValue(name).trim() || fallback;
}

// a metric's [{step, value}, ...] as [[x, y], ...]
function pointsOf(metric) {
  return metric.map((point) => [point.step, point.value]);
}

// series: [{label, points: [[x, y], ...]}] -> uPlot's aligned data (x values united, gaps as null)
function aligned(series) {
  const xs = [...new Set(series.flatMap((s) => s.points.map((p) => p[0])))].sort((a, b) => a - b);
  const index = new Map(xs.map((x, i) => [x, i]));
  const columns = series.map((s) => {
    const column = new Array(xs.length).fill(null);
    for (const [x, y] of s.points) column[index.get(x)] = y;
    return column;
  });
  return [xs, ...columns];
}

function drawChart(box, series, options = {}) {
  const plot = box.querySelector(".plot");
  const toggle = box.querySelector(".log-scale");
  const draw = () => {
    if (box.chart) box.chart.destroy();
    const axis = themeColor("--fg", "#222");
    const grid = themeColor("--grid", "#ddd");
    const log = toggle && toggle.checked;
    const width = Math.max(Math.min(plot.clientWidth || box.clientWidth || 560, 900), 280);
    box.chart = new uPlot({
      width, height: options.height || 260,
      scales: {x: {time: !!options.time}, y: log ? {distr: 3} : {}},
      axes: [{stroke: axis, grid: {stroke: grid}, label: options.xLabel || "step", ...(options.time ? {} : {incrs: STEP_INCREMENTS})},
             {stroke: axis, grid: {stroke: grid}, size: 60}],
      series: [{label: options.xLabel || "step"}, ...series.map((s, i) => ({
        label: s.label, stroke: PALETTE[i % PALETTE.length], width: 2, spanGaps: true,
        points: {show: s.points.length < 40, size: s.points.length === 1 ? 9 : 5, fill: PALETTE[i % PALETTE.length]},
        value: (u, v) => v == null ? "-" : numberText(v),
      }))],
    }, aligned(series), plot);
    box.dataset.drawn = String(series.length);
  };
  if (toggle) toggle.addEventListener("change", draw);
  window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", draw);  // its colours follow the page's
  draw();
}

async function jobCharts(container) {
  const metrics = await getJson(container.dataset.src);
  for (const box of container.querySelectorAll(".chart-box")) {
    const names = box.dataset.series.split(",").filter((name) => metrics[name]);
    drawChart(box, names.map((name) => ({label: name, points: pointsOf(metrics[name])})));
  }
}

async function compareCharts(container) {
  const answer = await getJson(container.dataset.src);
  for (const box of container.querySelectorAll(".chart-box")) {
    const name = box.dataset.metric;
    const series = answer.jobs.filter((job) => job.metrics[name]).map((job) => ({label: job.label, points: pointsOf(job.metrics[name])}));
    drawChart(box, series);
  }
}

async function fleetCharts(container) {
  const history = await getJson(container.dataset.src);
  for (const box of container.querySelectorAll(".chart-box")) {
    const name = box.dataset.series;
    drawChart(box, [{label: name, points: history.times.map((t, i) => [t, history[name][i]])}], {time: true, xLabel: "time", height: 200});
  }
}

// -- lightbox and copy buttons ----------------------------------------------------------------------
function lightbox() {
  const box = document.getElementById("lightbox");
  const image = box.querySelector("img");
  const caption = box.querySelector("figcaption");
  let pictures = [];
  let at = 0;
  const show = (index) => {
    at = (index + pictures.length) % pictures.length;
    image.src = pictures[at].src;
    caption.textContent = pictures[at].alt + "  (" + (at + 1) + " of " + pictures.length + ")";
  };
  const close = () => { box.hidden = true; document.body.classList.remove("boxed"); };
  document.addEventListener("click", (event) => {
    const picture = event.target.closest("img[data-lightbox]");
    if (!picture) return;
    event.preventDefault();
    pictures = [...document.querySelectorAll('img[data-lightbox="' + picture.dataset.lightbox + '"]')];
    box.hidden = false;
    document.body.classList.add("boxed");
    show(pictures.indexOf(picture));
  });
  box.querySelector(".close").addEventListener("click", close);
  box.querySelector(".prev").addEventListener("click", () => show(at - 1));
  box.querySelector(".next").addEventListener("click", () => show(at + 1));
  box.addEventListener("click", (event) => { if (event.target === box) close(); });
  document.addEventListener("keydown", (event) => {
    if (box.hidden) return;
    if (event.key === "Escape") close();
    else if (event.key === "ArrowLeft") show(at - 1);
    else if (event.key === "ArrowRight") show(at + 1);
  });
}

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch (error) {  // no clipboard API (an insecure origin): the old way
    const area = document.createElement("textarea");
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
}

function copyButtons() {
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.addEventListener("click", async () => {
      await copyText(button.dataset.copy);
      button.textContent = "copied";
      setTimeout(() => { button.textContent = "copy settings"; }, 1500);
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const jobs = document.getElementById("jobs");
  if (jobs) pollJobs(jobs);
  const job = document.getElementById("job");
  if (job && job.dataset.finished === "no") pollJob(job);
  const log = document.getElementById("log");
  if (log && job && job.dataset.finished === "no") tailLog(log);
  const charts = document.getElementById("charts");
  if (charts) jobCharts(charts).catch((error) => console.error("genq:", error));
  const compared = document.getElementById("compare-charts");
  if (compared) compareCharts(compared).catch((error) => console.error("genq:", error));
  const fleet = document.getElementById("fleet-charts");
  if (fleet) fleetCharts(fleet).catch((error) => console.error("genq:", error));
  lightbox();
  copyButtons();
  setInterval(refreshTimes, 15000);
});
