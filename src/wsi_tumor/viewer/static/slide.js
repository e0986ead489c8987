// wsi-view slide page: the slide in deep zoom, the probability map over it, the lesion
// candidates, the ground-truth outlines and the slide's facts. Coordinates from the server
// are the slide's level-0 pixels; OpenSeadragon's viewport has the slide's width as 1.
"use strict";

const view = { viewer: null, overlay: null, overlayLoaded: false, data: null, width: 1, markers: [], ready: false };
window.wsiView = view;  // for the browser tests and the curious

const MARKERS_MAX = 500;

function byId(id) { return document.getElementById(id); }

function toViewport(x, y) { return new OpenSeadragon.Point(x / view.width, y / view.width); }

view.fullyLoaded = function () {
  const world = view.viewer && view.viewer.world;
  if (!world || world.getItemCount() === 0) return false;
  for (let i = 0; i < world.getItemCount(); i++) {
    if (!world.getItemAt(i).getFullyLoaded()) return false;
  }
  return true;
};

view.centre = function () {  // the viewport's centre in level-0 pixels
  const centre = view.viewer.viewport.getCenter(true);
  return [centre.x * view.width, centre.y * view.width];
};

function showMessage(lines) {
  const shown = lines.filter(Boolean);
  const box = byId("message");
  box.replaceChildren(...shown.map((line) => {
    const p = document.createElement("p");
    p.textContent = line;
    return p;
  }));
  box.hidden = shown.length === 0;
}

function overlayUrl() {
  return view.data.map.url + "?threshold=" + parseFloat(byId("threshold").value).toFixed(2);
}

function setOverlay() {
  const map = view.data.map;
  const replace = view.overlay !== null;
  const index = view.data.slide.available ? 1 : 0;
  view.overlayLoaded = false;
  view.viewer.addTiledImage({
    tileSource: { type: "image", url: overlayUrl() },
    x: map.x / view.width, y: map.y / view.width, width: map.width / view.width,
    opacity: parseFloat(byId("opacity").value),
    index: replace ? index : undefined,
    replace: replace,
    success: (event) => { view.overlay = event.item; view.overlayLoaded = true; },
  });
}

function zoomTo(index) {
  const [, x, y] = view.data.candidate_list[index];
  const side = 8 * (view.data.map ? view.data.map.cell : 64);
  const box = new OpenSeadragon.Rect((x - side / 2) / view.width, (y - side / 2) / view.width,
    side / view.width, side / view.width);
  view.viewer.viewport.fitBounds(box);
  for (const [i, li] of byId("candidates").querySelectorAll("li").entries()) {
    li.classList.toggle("active", i === index);
  }
  view.markers.forEach((marker, i) => marker.classList.toggle("active", i === index));
}

function addCandidates() {
  const list = byId("candidates");
  const candidates = view.data.candidate_list;
  byId("candidate-count").textContent = "(" + candidates.length + ")";
  candidates.forEach(([p, x, y], i) => {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "p = " + p.toFixed(3) + " at (" + Math.round(x) + ", " + Math.round(y) + ")";
    button.addEventListener("click", () => zoomTo(i));
    li.append(button);
    list.append(li);
    if (i >= MARKERS_MAX || !view.viewer) return;
    const marker = document.createElement("div");
    marker.className = "marker";
    marker.title = "candidate " + (i + 1) + ", p = " + p.toFixed(3);
    view.viewer.addOverlay({ element: marker, location: toViewport(x, y),
      placement: OpenSeadragon.Placement.CENTER, checkResize: false });
    new OpenSeadragon.MouseTracker({ element: marker, clickHandler: () => zoomTo(i) });
    view.markers.push(marker);
  });
}

function addOutlines() {
  const truth = view.data.ground_truth;
  if (!truth) return;
  const note = byId("ground-truth-note");
  note.textContent = truth.message || (truth.file + ": " + truth.outlines.length + " outlines");
  if (!view.viewer || truth.outlines.length === 0) return;
  const ns = "http://www.w3.org/2000/svg";
  const holder = document.createElement("div");
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "outlines");
  svg.setAttribute("viewBox", "0 0 " + view.data.slide.width + " " + view.data.slide.height);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("width", "100%");
  svg.setAttribute("height", "100%");
  for (const outline of truth.outlines) {
    const polygon = document.createElementNS(ns, "polygon");
    polygon.setAttribute("points", outline.points.map((p) => p.join(",")).join(" "));
    if (!outline.tumour) polygon.setAttribute("class", "exclusion");
    svg.append(polygon);
  }
  holder.append(svg);
  view.viewer.addOverlay({ element: holder,
    location: new OpenSeadragon.Rect(0, 0, 1, view.data.slide.height / view.width) });
}

function addFacts() {
  const facts = byId("facts");
  const shown = Object.assign({ "tumour score": scoreText(view.data), precision: view.data.precision },
    view.data.facts);
  for (const [key, value] of Object.entries(shown)) {
    const dt = document.createElement("dt");
    dt.textContent = key;
    const dd = document.createElement("dd");
    dd.textContent = typeof value === "object" ? JSON.stringify(value) : String(value);
    facts.append(dt, dd);
  }
  for (const file of view.data.files) {
    const li = document.createElement("li");
    const link = document.createElement("a");
    link.href = file.url;
    link.textContent = file.name;
    li.append(link);
    byId("files").append(li);
  }
}

function scoreText(data) {
  if (data.score === null) return "none";
  return data.score.toFixed(3) + " (" + data.score_source + ")";
}

function setUpControls() {
  const map = view.data.map;
  byId("colour-scale").style.background = map
    ? "linear-gradient(to right, " + map.colours.join(", ") + ")" : "none";
  const opacity = byId("opacity");
  const threshold = byId("threshold");
  opacity.addEventListener("input", () => {
    byId("opacity-value").textContent = parseFloat(opacity.value).toFixed(2);
    if (view.overlay) view.overlay.setOpacity(parseFloat(opacity.value));
  });
  threshold.addEventListener("input", () => {
    byId("threshold-value").textContent = parseFloat(threshold.value).toFixed(2);
  });
  threshold.addEventListener("change", () => { if (map && view.viewer) setOverlay(); });
  if (!map) byId("map-controls").classList.add("muted");
}

async function load() {
  const name = decodeURIComponent(location.pathname.split("/").pop());
  const data = await (await fetch("/api/slides/" + encodeURIComponent(name))).json();
  view.data = data;
  view.overlayLoaded = !data.map;
  document.title = "wsi-view: " + data.name;
  byId("slide-name").textContent = data.name;
  byId("slide-status").textContent = data.status;
  byId("slide-status").className = "status status-" + data.status;
  byId("slide-score").textContent = "tumour score " + scoreText(data) + ", " +
    (data.candidates === null ? "no" : data.candidates) + " candidates, precision " + data.precision;
  showMessage([data.reason && data.status + ": " + data.reason, data.slide.message,
    data.score_note]);
  setUpControls();
  if (data.slide.width && (data.slide.available || data.map)) {
    view.width = data.slide.width;
    view.viewer = OpenSeadragon({
      element: byId("viewer"),
      prefixUrl: "/static/openseadragon/images/",
      drawer: "canvas",
      imageSmoothingEnabled: false,
      showNavigator: true,
      navigatorPosition: "BOTTOM_LEFT",
      maxZoomPixelRatio: 4,
      animationTime: 0.5,
    });
    if (data.slide.available) {
      view.viewer.addTiledImage({ tileSource: data.slide.dzi, x: 0, y: 0, width: 1, index: 0 });
    }
    if (data.map) setOverlay();
  }
  addCandidates();
  addOutlines();
  addFacts();
  view.ready = true;
  document.body.dataset.ready = "true";
}

load();
