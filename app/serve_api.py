"""The HTTP API of `streamer-serve` and its page, on any backend: `make_api(call)` builds the FastAPI app, where
`call(method, token, *args)` runs a `SessionHost.dispatch` wherever the session lives (app/serve.py: on the
session's Ray Serve replica; tests: in this process) and `call_stream(token, question)` its `dispatch_stream` (an
async iterator); both raise `Unreachable` when the session's host died under the request.

    POST   /api/sessions                       -> {"session": token, "replica": id}
    POST   /api/sessions/{token}/video         multipart field `file`: start ingesting it -> status
    GET    /api/sessions/{token}               -> status: state (none|running|done|stopped|error), frames, ...
    POST   /api/sessions/{token}/ask           {"question": "..."} -> {"answer": ..., "video_time_s": ...}
           ...?stream=true                     the answer as it is written: NDJSON lines {"piece": text}, then
                                               the answer as above (or {"error": ..., "status": ...} if it fails)
    DELETE /api/sessions/{token}
    GET    /                                   the page: upload, ask, the chat

Errors are {"detail": message}: 400 a bad request (an unreadable video, a question too long), 410 the session
is gone (its replica stopped, or it ended), 413 an upload too large, 429 no free session slot, 503 the
session's replica died while it answered. The page shows each as one line; on 410 and 503 it offers a new
session.
"""

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, StreamingResponse
from pydantic import BaseModel

from streamer.app.hosting import LOST


class Unreachable(Exception):
    """The host of a session died while it ran the request."""


class Question(BaseModel):
    question: str


async def in_thread(items: Iterator[dict]) -> AsyncIterator[dict]:
    """The items of a blocking iterator (an answer being written), each taken in a worker thread."""
    end = object()
    while (item := await asyncio.to_thread(next, items, end)) is not end:
        yield item


def checked(reply: dict) -> dict:
    """`reply`, or the HTTP error it carries ({"error": message, "status": ...} from `SessionHost.dispatch`)."""
    if "error" in reply:
        raise HTTPException(reply["status"], reply["error"])
    return reply


def make_api(call: Callable[..., Awaitable[dict]], call_stream: Callable[[str, str], AsyncIterator[dict]],
             max_upload_mb: int = 200) -> FastAPI:
    api = FastAPI(title="streamer", docs_url="/api/docs", openapi_url="/api/openapi.json")

    async def run(method: str, token, *args):
        try:
            return checked(await call(method, token, *args))["ok"]
        except Unreachable:
            raise HTTPException(503, LOST) from None

    @api.get("/", response_class=HTMLResponse)
    async def page():
        return PAGE

    @api.post("/api/sessions")
    async def open_session(request: Request):
        return await run("open", None, request.client.host if request.client else "")

    @api.post("/api/sessions/{token}/video")
    async def upload(token: str, file: UploadFile = File(...)):
        data = await file.read(max_upload_mb * 2**20 + 1)
        if len(data) > max_upload_mb * 2**20:
            raise HTTPException(413, f"the upload is over {max_upload_mb} MB, the most this server takes")
        return await run("upload", token, data, file.filename or "video")

    @api.get("/api/sessions/{token}")
    async def status(token: str):
        return await run("status", token)

    @api.post("/api/sessions/{token}/ask")
    async def ask(token: str, body: Question, stream: bool = False):
        if not stream:
            return await run("ask", token, body.question)
        items = aiter(call_stream(token, body.question))
        try:  # a refused question is an HTTP error, as without streaming
            first = checked(await anext(items))
        except Unreachable:
            raise HTTPException(503, LOST) from None

        async def lines():
            yield json.dumps(first) + "\n"
            try:
                async for item in items:
                    yield json.dumps(item) + "\n"
            except Unreachable:  # the replica died mid-answer: the last line says so
                yield json.dumps({"error": LOST, "status": 503}) + "\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    @api.delete("/api/sessions/{token}")
    async def close(token: str):
        return await run("close", token)

    return api


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
async function send(method, path, body, json) {  // the response, once it is known to be good
  const init = {method};
  if (json) { init.headers = {"content-type": "application/json"}; init.body = JSON.stringify(body); }
  else if (body) init.body = body;
  let r;
  try { r = await fetch(path, init); } catch (e) { throw new Error("the server cannot be reached"); }
  if (r.ok) return r;
  const data = await r.json().catch(() => ({detail: r.statusText}));
  if (r.status === 410 || r.status === 503) end(data.detail);
  throw new Error(data.detail || r.statusText);
}
async function api(method, path, body, json) {
  const r = await send(method, path, body, json);
  return r.json().catch(() => ({detail: r.statusText}));
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
async function askStreaming(q) {  // the answer appears as the model writes it (NDJSON lines)
  const r = await send("POST", "/api/sessions/" + token + "/ask?stream=true", {question: q}, true);
  say("q", "Q: " + q); say("a", "A: ");
  const shown = $("chat").lastChild, reader = r.body.getReader(), text = new TextDecoder();
  let buffer = "", answer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += text.decode(value, {stream: true});
    let cut;
    while ((cut = buffer.indexOf("\\n")) >= 0) {
      const item = JSON.parse(buffer.slice(0, cut)); buffer = buffer.slice(cut + 1);
      if (item.error) { if (item.status === 503) end(item.error); throw new Error(item.error); }
      answer = item.piece !== undefined ? answer + item.piece : item.answer;
      shown.textContent = "A: " + answer;
    }
  }
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
    await askStreaming(q);
    $("question").value = "";
  } catch (e) { if (!gone) showError(e.message); }
  finally { if (!gone) $("ask").disabled = false; }
};
$("restart").onclick = () => {
  gone = false; $("restart").hidden = true; $("ask").disabled = $("upload").disabled = false;
  showError(""); $("chat").textContent = ""; $("status").textContent = "Upload a video, then ask about it.";
};
</script></body></html>
"""
