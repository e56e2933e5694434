// radmesh review desk: sign-in (OpenID Connect authorization code + PKCE, S256), the worklist,
// a study view with key images and the finding's location, and the verdicts. Plain JS, no build.
// Everything it shows comes from the verification service's API with the signed-in user's token.
"use strict";

const TOKEN_KEY = "radmesh.review.token";
const PKCE_KEY = "radmesh.review.pkce";
const state = { config: null, token: null, user: null };

const $ = (id) => document.getElementById(id);

function show(...ids) {
  for (const id of ["signed-out", "worklist", "study", "alerts"]) $(id).hidden = !ids.includes(id);
}

function say(text, isError = false) {
  const box = $("message");
  box.textContent = text;
  box.className = isError ? "error" : "";
  box.hidden = !text;
}

function base64url(bytes) {
  return btoa(String.fromCharCode(...new Uint8Array(bytes)))
    .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function claims(jwt) {
  const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
  return JSON.parse(decodeURIComponent(escape(atob(part))));
}

function rolesOf(user) {
  let value = user;
  for (const part of (state.config.roles_claim || "realm_access.roles").split(".")) {
    value = value && typeof value === "object" ? value[part] : undefined;
  }
  return Array.isArray(value) ? value : [];
}

function redirectUri() {
  return `${location.origin}/review`;
}

async function signIn() {
  const verifier = base64url(crypto.getRandomValues(new Uint8Array(32)));
  const challenge = base64url(
    await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  const nonce = base64url(crypto.getRandomValues(new Uint8Array(16)));
  sessionStorage.setItem(PKCE_KEY, JSON.stringify({ verifier, state: nonce, hash: location.hash }));
  const url = new URL(state.config.authorization_endpoint);
  url.search = new URLSearchParams({
    response_type: "code",
    client_id: state.config.client_id,
    redirect_uri: redirectUri(),
    scope: "openid profile",
    state: nonce,
    code_challenge: challenge,
    code_challenge_method: "S256",
  }).toString();
  location.assign(url.toString());
}

async function tokenRequest(form) {
  const response = await fetch(state.config.token_endpoint, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams(form),
  });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error_description || body.error || response.status);
  const saved = {
    access_token: body.access_token,
    refresh_token: body.refresh_token,
    expires_at: Date.now() + body.expires_in * 1000,
  };
  sessionStorage.setItem(TOKEN_KEY, JSON.stringify(saved));
  return saved;
}

async function finishSignIn(params) {
  const pkce = JSON.parse(sessionStorage.getItem(PKCE_KEY) || "{}");
  sessionStorage.removeItem(PKCE_KEY);
  history.replaceState(null, "", `/review${pkce.hash || ""}`);
  if (!pkce.verifier || params.get("state") !== pkce.state) {
    say("Sign-in did not complete (its state did not match); sign in again.", true);
    return;
  }
  await tokenRequest({
    grant_type: "authorization_code",
    client_id: state.config.client_id,
    code: params.get("code"),
    redirect_uri: redirectUri(),
    code_verifier: pkce.verifier,
  });
}

async function accessToken() {
  const saved = JSON.parse(sessionStorage.getItem(TOKEN_KEY) || "null");
  if (!saved) return null;
  if (saved.expires_at - Date.now() > 20000) return saved.access_token;
  if (!saved.refresh_token) return null;
  try {
    const renewed = await tokenRequest({
      grant_type: "refresh_token",
      client_id: state.config.client_id,
      refresh_token: saved.refresh_token,
    });
    return renewed.access_token;
  } catch (error) {
    sessionStorage.removeItem(TOKEN_KEY);
    return null;
  }
}

async function api(path, options = {}) {
  const token = await accessToken();
  if (!token) {
    showSignedOut();
    throw new Error("signed out");
  }
  const response = await fetch(path, {
    ...options,
    headers: { ...(options.headers || {}), Authorization: `Bearer ${token}` },
  });
  if (response.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    showSignedOut();
  }
  return response;
}

async function apiJson(path, options) {
  const response = await api(path, options);
  const body = await response.json();
  if (!response.ok) {
    const diagnostics = body.issue ? body.issue.map((i) => i.diagnostics).join("; ") : response.status;
    throw new Error(diagnostics);
  }
  return body;
}

function showSignedOut() {
  $("user").hidden = true;
  $("sign-out").hidden = true;
  show("signed-out");
}

function waited(authoredOn) {
  if (!authoredOn) return "";
  const minutes = Math.max(0, Math.round((Date.now() - Date.parse(authoredOn)) / 60000));
  if (minutes < 60) return `${minutes} min`;
  const hours = Math.floor(minutes / 60);
  return hours < 48 ? `${hours} h ${minutes % 60} min` : `${Math.floor(hours / 24)} d`;
}

function valueText(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "object") return `${value.value} ${value.unit || ""}`.trim();
  return String(value);
}

function probabilityText(probability) {
  return probability === null || probability === undefined ? "" : probability.toFixed(2);
}

function findingText(finding) {
  const probability = probabilityText(finding.probability);
  return `${finding.code} ${valueText(finding.value)}${probability ? ` (p ${probability})` : ""}`;
}

function presentFindings(task) {
  return task.findings.filter((f) => f.value !== "Absent");
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

async function showWorklist() {
  show("worklist");
  const body = await apiJson("/tasks");
  const rows = $("worklist-rows");
  rows.replaceChildren();
  $("worklist-count").textContent =
    `${body.count} waiting${body.truncated ? " (more not shown)" : ""}`;
  for (const task of body.tasks) {
    const row = document.createElement("tr");
    row.className = "task";
    row.dataset.testid = "task";
    row.dataset.task = task.id;
    row.dataset.study = task.study_instance_uid;
    cell(row, task.priority, `priority ${task.priority}`);
    cell(row, waited(task.authored_on));
    const model = cell(row, task.model || "");
    model.title = task.model_display || "";
    if (task.not_for_clinical_use) {
      const badge = document.createElement("div");
      badge.className = "badge";
      badge.textContent = "not for clinical use";
      model.appendChild(badge);
    }
    const found = presentFindings(task);
    cell(row, found.length
      ? found.map(findingText).join("; ")
      : "nothing found", found.length ? "present" : "");
    cell(row, task.study_instance_uid);
    row.addEventListener("click", () => { location.hash = `#/task/${task.id}`; });
    rows.appendChild(row);
  }
}

// One key image per instance: the findings that lie on it in its caption, the location of the
// one that has a centre drawn over it.
function keyImagesOf(task) {
  const bySop = new Map();
  for (const finding of task.findings) {
    for (const image of finding.images) {
      const entry = bySop.get(image.sop) || { ...image, findings: [] };
      entry.centre = entry.centre || image.centre;
      entry.findings.push(finding);
      bySop.set(image.sop, entry);
    }
  }
  return [...bySop.values()];
}

async function keyImage(task, image) {
  const figure = document.createElement("figure");
  figure.className = "key-image";
  figure.dataset.testid = "key-image";
  figure.dataset.sop = image.sop;
  const frame = document.createElement("div");
  frame.className = "frame";
  const img = document.createElement("img");
  img.alt = `key image: ${image.findings.map((f) => f.code).join(", ")}`;
  frame.appendChild(img);
  figure.appendChild(frame);
  const caption = document.createElement("figcaption");
  const slice = image.centre ? ` — slice ${Math.round(image.centre[0]) + 1}` : "";
  caption.textContent = `${image.findings.map(findingText).join("; ")}${slice}`;
  figure.appendChild(caption);
  const response = await api(`/tasks/${task.id}/images/${image.series}/${image.sop}`);
  if (!response.ok) {
    caption.textContent += " (the PACS could not render it)";
    return figure;
  }
  img.src = URL.createObjectURL(await response.blob());
  await img.decode();
  if (image.centre) {
    const [, y, x] = image.centre;
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("viewBox", `0 0 ${img.naturalWidth} ${img.naturalHeight}`);
    const mark = document.createElementNS("http://www.w3.org/2000/svg", "circle");
    mark.setAttribute("cx", x);
    mark.setAttribute("cy", y);
    mark.setAttribute("r", Math.max(6, img.naturalWidth / 24));
    mark.setAttribute("fill", "none");
    mark.setAttribute("stroke", "#ffd400");
    mark.setAttribute("stroke-width", Math.max(1.5, img.naturalWidth / 200));
    mark.dataset.testid = "finding-location";
    svg.appendChild(mark);
    frame.appendChild(svg);
  }
  figure.dataset.loaded = "true";
  return figure;
}

async function decide(task, action, body) {
  try {
    const result = await apiJson(`/tasks/${task.id}/${action}`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    say(`Recorded: ${result.verdict} (${result.diagnostic_report}).`);
    location.hash = "#/";
  } catch (error) {
    say(`Not recorded: ${error.message}`, true);
  }
}

async function showStudy(taskId) {
  // Nothing of the previous study may stay clickable while this one loads: a verdict must
  // only ever reach the Task whose findings are on the screen.
  show();
  $("verdict").hidden = true;
  $("accept").onclick = null;
  $("reject").onclick = null;
  $("finding-rows").replaceChildren();
  $("key-images").replaceChildren();
  const task = await apiJson(`/tasks/${taskId}`);
  $("study-title").textContent = `${task.priority.toUpperCase()} · ${task.diagnostic_report.code || "Report"} · ${task.diagnostic_report.status}`;
  $("study-model").textContent = `${task.model_display} — version ${(task.model || "").split("/")[1] || "?"}`;
  $("not-for-clinical-use").hidden = !task.not_for_clinical_use;
  const viewer = $("viewer-link");
  viewer.hidden = !state.config.viewer_url;
  if (state.config.viewer_url) {
    viewer.querySelector("a").href =
      `${state.config.viewer_url}?StudyInstanceUIDs=${encodeURIComponent(task.study_instance_uid)}`;
  }
  const rows = $("finding-rows");
  rows.replaceChildren();
  for (const finding of task.findings) {
    const row = document.createElement("tr");
    row.dataset.testid = "finding";
    row.dataset.observation = finding.observation;
    cell(row, finding.code, finding.value === "Absent" ? "" : "present");
    cell(row, valueText(finding.value));
    cell(row, probabilityText(finding.probability));
    cell(row, finding.status);
    const amend = cell(row, "");
    if (finding.measured && task.status === "requested") {
      const input = document.createElement("input");
      input.type = "number";
      input.step = "any";
      input.className = "amend-value";
      input.value = finding.value.value;
      input.dataset.testid = "amend-value";
      const button = document.createElement("button");
      button.textContent = "Amend";
      button.dataset.testid = "amend";
      button.addEventListener("click", () => decide(task, "amend", {
        observation: finding.observation, value: Number(input.value),
      }));
      amend.append(input, " ", button);
    }
    rows.appendChild(row);
  }
  $("accept").onclick = () => decide(task, "accept", {});
  $("reject").onclick = () => {
    const note = $("reject-note").value.trim();
    decide(task, "reject", note ? { reason: $("reject-reason").value, note } : { reason: $("reject-reason").value });
  };
  $("reject-note").value = "";
  $("verdict").hidden = task.status !== "requested";
  $("study").dataset.task = task.id;
  show("study");
  const images = $("key-images");
  for (const image of keyImagesOf(task)) images.appendChild(await keyImage(task, image));
}

async function showAlerts() {
  show("alerts");
  const body = await apiJson("/alerts");
  const rows = $("alert-rows");
  rows.replaceChildren();
  $("alerts-count").textContent = `${body.count} open${body.truncated ? ", newest shown" : ""}`;
  for (const alert of body.alerts) {
    const row = document.createElement("tr");
    row.dataset.testid = "alert";
    row.dataset.alert = alert.id;
    cell(row, alert.priority || "", `priority ${alert.priority}`);
    cell(row, `${waited(alert.authored_on)} ago`);
    cell(row, alert.text || "");
    const action = cell(row, "");
    const button = document.createElement("button");
    button.textContent = "Acknowledge";
    button.className = "accept";
    button.dataset.testid = "acknowledge";
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        const done = await apiJson(`/alerts/${alert.id}/acknowledge`, {
          method: "POST", headers: { "Content-Type": "application/json" }, body: "{}",
        });
        say(`Acknowledged (${done.acknowledgement}).`);
        await showAlerts();
      } catch (error) {
        button.disabled = false;
        say(`Not acknowledged: ${error.message}`, true);
      }
    });
    action.appendChild(button);
    rows.appendChild(row);
  }
}

async function route() {
  try {
    const match = location.hash.match(/^#\/task\/([A-Za-z0-9.-]+)$/);
    if (match) await showStudy(match[1]);
    else if (location.hash === "#/alerts" || (!location.hash.startsWith("#/") && !state.radiologist)) await showAlerts();
    else await showWorklist();
  } catch (error) {
    if (error.message !== "signed out") say(error.message, true);
  }
}

async function main() {
  state.config = await (await fetch("/review/config.json")).json();
  $("sign-in").addEventListener("click", signIn);
  $("sign-out").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    const url = new URL(state.config.end_session_endpoint || redirectUri());
    if (state.config.end_session_endpoint) {
      url.search = new URLSearchParams({
        client_id: state.config.client_id, post_logout_redirect_uri: redirectUri(),
      }).toString();
    }
    location.assign(url.toString());
  });
  const params = new URLSearchParams(location.search);
  if (params.get("code")) {
    try {
      await finishSignIn(params);
    } catch (error) {
      say(`Sign-in failed: ${error.message}`, true);
    }
  }
  const token = await accessToken();
  if (!token) return showSignedOut();
  const user = claims(token);
  const roles = rolesOf(user);
  state.radiologist = roles.includes("radiologist");
  $("nav").hidden = false;
  $("user").textContent = `${user.name || user.preferred_username} (${roles.join(", ") || "no role"})`;
  $("user").hidden = false;
  $("sign-out").hidden = false;
  window.addEventListener("hashchange", route);
  await route();
}

main();
