"""JavaScript the web UI runs in the page (`app/ui.py` passes it to `demo.load(js=...)`)."""

# The id of this browser tab, kept over reloads (sessionStorage is per tab): Gradio reloads the page when its
# connection comes back, with a new session_hash, and the server finds the tab's session by this id
TAB_ID_JS = """
(id) => {
  let tab = sessionStorage.getItem('streamer-tab');
  if (!tab) { tab = crypto.randomUUID(); sessionStorage.setItem('streamer-tab', tab); }
  return tab;
}
"""

# Runs once in the page: when the browser refuses the camera (permission denied, no camera, a page
# served over plain http from another machine), write why into the webcam tab instead of failing silently.
WEBCAM_ERRORS_JS = """
() => {
  const show = (text) => {
    const box = document.querySelector('#cam-error .cam-error');
    if (box) { box.textContent = text; box.style.display = text ? 'block' : 'none'; }
  };
  const md = navigator.mediaDevices;
  if (!md || !md.getUserMedia) {
    show('This page cannot use a camera: browsers allow it only on https or localhost pages.');
    return;
  }
  const reasons = {
    NotAllowedError: 'Camera access was refused: allow the camera in the browser site settings, '
      + 'then click the camera box again.',
    NotFoundError: 'No camera was found on this device.',
    NotReadableError: 'The camera is in use by another program.',
  };
  const original = md.getUserMedia.bind(md);
  md.getUserMedia = async (constraints) => {
    try { const stream = await original(constraints); show(''); return stream; }
    catch (err) { show(reasons[err.name] || ('Cannot open the camera: ' + err.message)); throw err; }
  };
}
"""
