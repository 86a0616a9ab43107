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

# Runs once in the page: "Notify me" (#notify). When it is on and the alert box's serial grows (a standing
# question fired, app/watches.py), play a short beep made with WebAudio (no sound file is fetched) and show a
# browser notification if the user allowed them. Turning it on is the user gesture the browser needs to
# allow sound (the AudioContext is made then) and to ask for the notification permission.
NOTIFY_JS = """
() => {
  let audio = null;
  let seen = 0;  // the alert serial this page has dealt with
  const on = () => { const box = document.querySelector('#notify input[type=checkbox]'); return box && box.checked; };
  document.addEventListener('change', (event) => {
    if (!event.target.closest || !event.target.closest('#notify') || !event.target.checked) return;
    const Context = window.AudioContext || window.webkitAudioContext;
    if (!audio && Context) audio = new Context();
    if (audio && audio.state === 'suspended') audio.resume();
    if ('Notification' in window && Notification.permission === 'default') Notification.requestPermission();
  });
  const beep = () => {
    if (!audio) return;
    const osc = audio.createOscillator(), gain = audio.createGain(), now = audio.currentTime;
    osc.frequency.value = 880;
    gain.gain.setValueAtTime(0.2, now);
    gain.gain.exponentialRampToValueAtTime(0.001, now + 0.3);
    osc.connect(gain);
    gain.connect(audio.destination);
    osc.start(now);
    osc.stop(now + 0.3);
  };
  const check = () => {
    const box = document.querySelector('#alerts .alerts');
    const serial = box ? Number(box.dataset.serial) : 0;
    if (serial <= seen) { seen = serial; return; }  // nothing new (or another session's count)
    seen = serial;
    if (!on()) return;
    beep();
    if ('Notification' in window && Notification.permission === 'granted') {
      const latest = box.querySelector('.alert');
      new Notification('Standing question fired', { body: latest ? latest.textContent : '', tag: 'streamer-alert' });
    }
  };
  new MutationObserver(check).observe(document.body, { subtree: true, childList: true, attributes: true,
                                                       attributeFilter: ['data-serial'] });
}
"""
