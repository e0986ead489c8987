// wsi-view cohort page: every slide of the run, sortable and filterable.
"use strict";

const state = { rows: [], key: "score", descending: true };

function text(tag, value, className) {
  const element = document.createElement(tag);
  element.textContent = value === null || value === undefined ? "\u2013" : String(value);
  if (className) element.className = className;
  return element;
}

function compare(a, b) {
  const x = a[state.key], y = b[state.key];
  if (x === y) return a.name < b.name ? -1 : 1;
  if (x === null || x === undefined) return 1;  // missing values last either way
  if (y === null || y === undefined) return -1;
  const order = x < y ? -1 : 1;
  return state.descending ? -order : order;
}

function render() {
  const name = document.getElementById("filter-name").value.trim().toLowerCase();
  const status = document.getElementById("filter-status").value;
  const minScore = parseFloat(document.getElementById("filter-score").value) || 0;
  const shown = state.rows.filter((row) =>
    row.name.toLowerCase().includes(name) &&
    (!status || row.status === status) &&
    (minScore <= 0 || (row.score !== null && row.score >= minScore)));
  shown.sort(compare);
  const body = document.querySelector("#cohort-table tbody");
  body.replaceChildren();
  for (const row of shown) {
    const tr = document.createElement("tr");
    tr.dataset.name = row.name;
    const nameCell = document.createElement("td");
    const link = document.createElement("a");
    link.href = "/slides/" + encodeURIComponent(row.name);
    link.textContent = row.name;
    nameCell.append(link);
    if (!row.slide_available && row.slide_problem) {
      const note = text("span", "no slide file to show", "reason");
      note.title = row.slide_problem;
      nameCell.append(note);
    }
    const statusCell = text("td", row.status, "status-" + row.status);
    if (row.reason) statusCell.append(text("span", row.reason, "reason"));
    const score = row.score === null ? null : row.score.toFixed(3) +
      (row.score_source === "map maximum" ? " (map max)" : "");
    tr.append(nameCell, statusCell, text("td", score, "num score"),
      text("td", row.candidates, "num"), text("td", row.damaged_regions, "num"),
      text("td", row.mode), text("td", row.precision));
    body.append(tr);
  }
  document.getElementById("cohort-count").textContent =
    shown.length + " of " + state.rows.length + " slides";
  for (const th of document.querySelectorAll("#cohort-table th")) {
    th.classList.toggle("sorted-asc", th.dataset.key === state.key && !state.descending);
    th.classList.toggle("sorted-desc", th.dataset.key === state.key && state.descending);
  }
}

async function load() {
  const response = await fetch("/api/cohort");
  const data = await response.json();
  state.rows = data.slides;
  document.getElementById("cohort-out").textContent = data.out;
  for (const th of document.querySelectorAll("#cohort-table th")) {
    th.addEventListener("click", () => {
      state.descending = th.dataset.key === state.key ? !state.descending : th.dataset.key === "score";
      state.key = th.dataset.key;
      render();
    });
  }
  for (const id of ["filter-name", "filter-status", "filter-score"]) {
    document.getElementById(id).addEventListener("input", render);
  }
  render();
  document.body.dataset.ready = "true";
}

load();
