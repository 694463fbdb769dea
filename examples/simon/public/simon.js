// Simon: the game in the page, high scores from /api on the same origin.
'use strict';

(() => {
  const PADS = [
    { name: 'green', hz: 415.3 }, // the original toy's tones
    { name: 'red', hz: 310.0 },
    { name: 'yellow', hz: 252.0 },
    { name: 'blue', hz: 209.0 },
  ];
  const KEYS = { q: 0, w: 1, a: 2, s: 3, 1: 0, 2: 1, 3: 2, 4: 3 };
  const INPUT_TIMEOUT_MS = 5000;
  const MAX_BACKOFF_MS = 15000;

  const $ = (id) => document.getElementById(id);
  const board = $('board');
  const pads = [...board.querySelectorAll('.pad')];
  const startButton = $('start');
  const roundLabel = $('round');
  const statusLine = $('status');
  const bestLabel = $('best');
  const form = $('post-score');
  const nameInput = $('name');
  const postMessage = $('post-message');
  const connection = $('connection');
  const scoresBody = $('scores-body');
  const scoresEmpty = $('scores-empty');
  const toast = $('toast');

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // Sound --------------------------------------------------------------------------------------

  let audio = null;

  function tone(hz, ms, type = 'triangle', volume = 0.22) {
    if (!audio) return;
    const now = audio.currentTime;
    const osc = audio.createOscillator();
    const gain = audio.createGain();
    osc.type = type;
    osc.frequency.value = hz;
    gain.gain.setValueAtTime(0, now);
    gain.gain.linearRampToValueAtTime(volume, now + 0.015);
    gain.gain.setValueAtTime(volume, now + Math.max(0.02, ms / 1000 - 0.05));
    gain.gain.linearRampToValueAtTime(0, now + ms / 1000);
    osc.connect(gain).connect(audio.destination);
    osc.start(now);
    osc.stop(now + ms / 1000 + 0.02);
  }

  function unlockAudio() {
    // Browsers only allow sound after a user gesture: create the context on the first one.
    const Context = window.AudioContext || window.webkitAudioContext;
    if (!audio && Context) audio = new Context();
    if (audio && audio.state === 'suspended') audio.resume();
  }

  // Game ---------------------------------------------------------------------------------------

  const game = {
    sequence: [],
    step: 0,
    phase: 'idle', // idle | playback | input | over
    generation: 0, // bumps on every new game, so stale playback loops stop
    timer: null,
  };
  let best = Number(localStorage.getItem('simon.best') || 0);
  bestLabel.textContent = best;

  function setPhase(phase) {
    game.phase = phase;
    board.dataset.phase = phase;
    for (const pad of pads) pad.disabled = phase !== 'input';
  }

  async function flash(index, ms) {
    const pad = pads[index];
    pad.classList.add('lit');
    tone(PADS[index].hz, ms);
    await sleep(ms);
    pad.classList.remove('lit');
  }

  function start() {
    unlockAudio();
    clearTimeout(game.timer);
    game.generation += 1;
    game.sequence = [];
    form.hidden = true;
    board.classList.remove('fail');
    startButton.textContent = 'Restart';
    nextRound(game.generation);
  }

  async function nextRound(generation) {
    game.sequence.push(Math.floor(Math.random() * PADS.length));
    game.step = 0;
    roundLabel.textContent = game.sequence.length;
    setPhase('playback');
    statusLine.textContent = 'Watch…';
    const round = game.sequence.length;
    const lit = Math.max(200, 520 - round * 22); // faster as the sequence grows
    const gap = Math.max(70, 180 - round * 8);
    await sleep(450);
    for (const index of game.sequence) {
      if (generation !== game.generation) return;
      await flash(index, lit);
      await sleep(gap);
    }
    if (generation !== game.generation) return;
    setPhase('input');
    statusLine.textContent = round === 1 ? 'Your turn: repeat it.' : `Your turn: ${round} steps.`;
    armTimeout();
  }

  function armTimeout() {
    clearTimeout(game.timer);
    const generation = game.generation;
    game.timer = setTimeout(() => {
      if (generation === game.generation && game.phase === 'input') gameOver('Too slow!');
    }, INPUT_TIMEOUT_MS);
  }

  function press(index) {
    if (game.phase !== 'input') return;
    flash(index, 220);
    if (index !== game.sequence[game.step]) {
      gameOver('Wrong pad!');
      return;
    }
    game.step += 1;
    if (game.step < game.sequence.length) {
      armTimeout();
      return;
    }
    clearTimeout(game.timer);
    setPhase('playback');
    statusLine.textContent = 'Nice!';
    const generation = game.generation;
    setTimeout(() => generation === game.generation && nextRound(generation), 500);
  }

  function gameOver(reason) {
    clearTimeout(game.timer);
    setPhase('over');
    tone(92, 650, 'sawtooth', 0.18);
    board.classList.remove('fail');
    void board.offsetWidth; // restart the shake animation
    board.classList.add('fail');
    const score = game.sequence.length - 1;
    if (score > best) {
      best = score;
      localStorage.setItem('simon.best', String(best));
      bestLabel.textContent = best;
    }
    statusLine.textContent = `${reason} Game over at round ${game.sequence.length}.`;
    startButton.textContent = 'Play again';
    $('final-score').textContent = score;
    postMessage.textContent = '';
    postMessage.className = 'post-message';
    form.hidden = false;
    form.querySelector('button').disabled = false;
    nameInput.value = localStorage.getItem('simon.name') || '';
    nameInput.focus({ preventScroll: true });
  }

  startButton.addEventListener('click', start);
  for (const pad of pads) {
    pad.addEventListener('pointerdown', (event) => {
      event.preventDefault(); // keep focus where it is, no text selection on long presses
      unlockAudio();
      press(Number(pad.dataset.pad));
    });
    // Keyboard activation (Enter/Space on a focused pad) arrives as a click without a pointer.
    pad.addEventListener('click', (event) => event.detail === 0 && press(Number(pad.dataset.pad)));
  }
  document.addEventListener('keydown', (event) => {
    if (event.target instanceof HTMLInputElement || event.repeat || event.ctrlKey || event.metaKey) {
      return;
    }
    const key = event.key.toLowerCase();
    if (key in KEYS) {
      unlockAudio();
      press(KEYS[key]);
    } else if (key === ' ' && document.activeElement === document.body) {
      event.preventDefault();
      start();
    }
  });

  // High scores --------------------------------------------------------------------------------

  const relative = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto', style: 'short' });

  function ago(iso) {
    const seconds = Math.round((Date.parse(iso) - Date.now()) / 1000);
    if (Number.isNaN(seconds)) return '';
    if (seconds > -45) return 'just now';
    if (seconds > -3600) return relative.format(Math.round(seconds / 60), 'minute');
    if (seconds > -86400) return relative.format(Math.round(seconds / 3600), 'hour');
    return relative.format(Math.round(seconds / 86400), 'day');
  }

  let lastScores = [];

  function renderScores(scores, freshId = null) {
    lastScores = scores;
    const rows = scores.map((entry, i) => {
      const row = document.createElement('tr');
      if (entry.id === freshId) row.className = 'fresh';
      const cells = [
        [String(i + 1), ''],
        [entry.name, 'name'], // textContent, never innerHTML: names come from other players
        [String(entry.score), 'num'],
        [ago(entry.at), 'when'],
      ];
      for (const [text, className] of cells) {
        const cell = document.createElement('td');
        cell.textContent = text;
        if (className) cell.className = className;
        row.append(cell);
      }
      row.cells[1].title = entry.name;
      return row;
    });
    scoresBody.replaceChildren(...rows);
    scoresEmpty.hidden = scores.length > 0;
  }

  async function loadScores() {
    try {
      const response = await fetch('/api/scores', { headers: { Accept: 'application/json' } });
      if (response.ok) renderScores(await response.json());
    } catch (err) {
      console.warn('could not load scores:', err);
    }
  }

  let toastTimer = null;
  function showToast(text) {
    toast.textContent = text;
    toast.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { toast.hidden = true; }, 4000);
  }

  let myPost = null; // what this page posted last: the push for it can beat the HTTP answer

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const button = form.querySelector('button');
    const name = nameInput.value.trim();
    const score = Number($('final-score').textContent);
    button.disabled = true;
    myPost = { name, score, id: null };
    postMessage.className = 'post-message';
    postMessage.textContent = 'Posting…';
    try {
      const response = await fetch('/api/scores', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ name, score }),
      });
      const body = await response.json().catch(() => ({}));
      if (!response.ok) throw new Error(body.error || `the server answered ${response.status}`);
      myPost.id = body.id;
      localStorage.setItem('simon.name', name);
      postMessage.className = 'post-message ok';
      postMessage.textContent = 'Saved! Press Start to play again.';
      if (!socket || socket.readyState !== WebSocket.OPEN) loadScores(); // no live push coming
    } catch (err) {
      postMessage.textContent = `Could not post: ${err.message}`;
      button.disabled = false;
    }
  });

  // Live updates over a websocket on this page's own origin, reconnecting with backoff ----------

  let socket = null;
  let backoff = 500;

  function setConnection(state, text) {
    connection.dataset.state = state;
    connection.textContent = text;
    document.body.dataset.live = String(state === 'live');
  }

  function connect() {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    socket = new WebSocket(`${scheme}//${location.host}/api/ws`);
    socket.addEventListener('open', () => {
      backoff = 500;
      setConnection('live', 'live');
    });
    socket.addEventListener('message', (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message.type === 'scores') {
        renderScores(message.scores);
      } else if (message.type === 'highscore') {
        renderScores(message.scores, message.entry.id);
        const { entry } = message;
        const mine = myPost && (myPost.id === null
          ? myPost.name === entry.name && myPost.score === entry.score
          : myPost.id === entry.id);
        const who = mine ? 'You' : entry.name;
        showToast(`★ ${who} just made #${message.rank} with ${entry.score}!`);
      }
    });
    socket.addEventListener('close', () => {
      const delay = backoff + Math.random() * backoff * 0.3; // jitter: not every page at once
      backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
      setConnection('offline', `reconnecting in ${Math.ceil(delay / 1000)} s`);
      setTimeout(connect, delay);
    });
  }

  setPhase('idle');
  loadScores();
  connect();
  setInterval(() => renderScores(lastScores), 60000); // keep "n min ago" honest
})();
