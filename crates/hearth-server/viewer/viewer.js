// hearth's viewer page: reads the VM and the link's key from the URL's
// fragment, asks the server whether the VM has a screen, and shows it with
// noVNC (served by hearth from the copy the host's setup installed). The
// key goes to the server in a header, and for the WebSocket (whose browser
// API sends no headers) as a subprotocol the server never echoes back.
import RFB from '/viewer/novnc/core/rfb.js';

const params = new URLSearchParams(location.hash.slice(1));
const vm = params.get('vm') || '';
const key = params.get('key') || '';
const statusBox = document.getElementById('status');
const screen = document.getElementById('screen');
const clipText = document.getElementById('clip-text');
let rfb = null;

function show(title, detail) {
  statusBox.querySelector('.title').textContent = title;
  statusBox.querySelector('.detail').textContent = detail || '';
  statusBox.classList.remove('hidden');
  document.title = `hearth viewer: ${title}`;
}

function hide() {
  statusBox.classList.add('hidden');
  document.title = `hearth viewer: ${vm}`;
}

// The VM's state as the server tells it to this link; the message of a
// refusal (expired, revoked, another VM's link) otherwise.
async function viewerState() {
  const res = await fetch(`/v1/vms/${encodeURIComponent(vm)}/viewer`, {
    headers: { 'X-Hearth-Viewer-Key': key },
    cache: 'no-store',
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    return { refused: true, message: body.message || `The server answered ${res.status}.` };
  }
  return body;
}

async function waitForScreen() {
  for (;;) {
    let st;
    try {
      st = await viewerState();
    } catch (e) {
      show('The hearth server cannot be reached.', 'Retrying…');
      await sleep(2000);
      continue;
    }
    if (st.refused) {
      show('This viewer link does not open a screen.', st.message);
      return;
    }
    if (st.ready) {
      connect();
      return;
    }
    if (['requested', 'preparing', 'booting'].includes(st.state)) {
      show('The VM is starting…', st.message);
      await sleep(2000);
      continue;
    }
    show('The VM is gone.', st.message);
    return;
  }
}

function connect() {
  show('Connecting to the screen…');
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const url = `${scheme}://${location.host}/v1/vms/${encodeURIComponent(vm)}/vnc`;
  rfb = new RFB(screen, url, { wsProtocols: ['binary', `hearth.viewer.${key}`] });
  rfb.scaleViewport = true;
  rfb.resizeSession = false;
  rfb.focusOnClick = true;
  rfb.addEventListener('connect', () => { hide(); rfb.focus(); });
  rfb.addEventListener('disconnect', async () => {
    rfb = null;
    show('The screen closed.', 'Finding out why…');
    const st = await viewerState().catch(() => null);
    if (!st) {
      show('The screen closed.', 'The hearth server cannot be reached.');
    } else if (st.refused) {
      show('This viewer link no longer opens the screen.', st.message);
    } else if (st.ready) {
      show('The screen closed.', 'Reconnecting…');
      setTimeout(connect, 2000);
    } else {
      show('The VM is gone.', st.message);
    }
  });
  rfb.addEventListener('clipboard', (e) => { clipText.value = e.detail.text; });
  rfb.addEventListener('desktopname', (e) => { document.title = `${e.detail.name} (hearth)`; });
}

function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

document.getElementById('clip-toggle').addEventListener('click', () => {
  document.getElementById('clip').classList.toggle('open');
});
clipText.addEventListener('input', () => { if (rfb) rfb.clipboardPasteFrom(clipText.value); });
document.getElementById('keys').addEventListener('click', () => { if (rfb) rfb.sendCtrlAltDel(); });

if (!vm || !key) {
  show('This viewer link is incomplete.', 'Open the whole link you were given (it ends with #vm=…&key=…).');
} else {
  waitForScreen();
}
