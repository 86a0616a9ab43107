"""The page `streamer-serve` serves at /: pick a video, follow its ingest, ask about it, see the chat. Plain HTML
and fetch() on the HTTP API of app/serve.py; a session whose replica stopped shows the server's message and
offers a new session."""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>streamer</title>
<style>
body{font:15px system-ui,sans-serif;max-width:760px;margin:2em auto;padding:0 1em}
#chat div{margin:.4em 0} .q{font-weight:600} .err{color:#b00020;font-weight:600}
input[type=text]{width:70%} #status{color:#555}
</style></head><body>
<h1>streamer</h1>
<p><input id="file" type="file" accept="video/*,image/*"> <button id="upload">Upload</button>
<button id="restart" hidden>Start a new session</button></p>
<p id="status">Upload a video, then ask about it.</p>
<p id="error" class="err" role="alert"></p>
<div id="chat"></div>
<form id="askform"><input id="question" type="text" placeholder="Ask about the video" autocomplete="off">
<button id="ask">Ask</button></form>
<script>
let token = null, gone = false, polling = null;
const $ = id => document.getElementById(id);
function showError(text) { $("error").textContent = text || ""; }
function end(text) {  // the session is gone (its replica stopped, or it ended): say so, offer a new one
  gone = true; token = null; showError(text); $("restart").hidden = false;
  $("ask").disabled = $("upload").disabled = true; clearInterval(polling);
}
async function api(method, path, body, json) {
  const init = {method};
  if (json) { init.headers = {"content-type": "application/json"}; init.body = JSON.stringify(body); }
  else if (body) init.body = body;
  let r;
  try { r = await fetch(path, init); } catch (e) { throw new Error("the server cannot be reached"); }
  const data = await r.json().catch(() => ({detail: r.statusText}));
  if (r.status === 410 || r.status === 503) { end(data.detail); throw new Error(data.detail); }
  if (!r.ok) throw new Error(data.detail || r.statusText);
  return data;
}
async function session() {
  if (!token) token = (await api("POST", "/api/sessions")).session;
  return token;
}
function say(cls, text) {
  const d = document.createElement("div"); d.className = cls; d.textContent = text; $("chat").append(d);
}
async function poll() {
  if (!token || gone) return;
  try {
    const s = await api("GET", "/api/sessions/" + token);
    $("status").textContent = s.video ? `${s.video}: ${s.state}, ${s.frames_ingested} frames, ` +
      `${s.video_time_s.toFixed(1)} s of video in the cache (${(s.kv_bytes / 2**20).toFixed(1)} MiB)` : "No video yet.";
    if (s.errors.length) showError(s.errors.join(" "));
  } catch (e) { if (!gone) showError(e.message); }
}
$("upload").onclick = async () => {
  const f = $("file").files[0];
  if (!f) return showError("pick a video file first");
  showError(""); $("chat").textContent = "";
  try {
    const form = new FormData(); form.append("file", f);
    await api("POST", "/api/sessions/" + await session() + "/video", form);
    clearInterval(polling); polling = setInterval(poll, 1000); poll();
  } catch (e) { if (!gone) showError(e.message); }
};
$("askform").onsubmit = async ev => {
  ev.preventDefault();
  const q = $("question").value.trim();
  if (!q || !token) return showError(token ? "" : "upload a video first");
  $("ask").disabled = true; showError("");
  try {
    const a = await api("POST", "/api/sessions/" + token + "/ask", {question: q}, true);
    say("q", "Q: " + q); say("a", "A: " + a.answer); $("question").value = "";
  } catch (e) { if (!gone) showError(e.message); }
  finally { if (!gone) $("ask").disabled = false; }
};
$("restart").onclick = () => {
  gone = false; $("restart").hidden = true; $("ask").disabled = $("upload").disabled = false;
  showError(""); $("chat").textContent = ""; $("status").textContent = "Upload a video, then ask about it.";
};
</script></body></html>
"""
