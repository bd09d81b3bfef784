// The chat page: the line protocol of docs/protocol.md over the WebSocket at
// /ws. Each server line is one text message; each line typed is one message.
// Every line is shown as text (textContent), never as HTML.
"use strict";

(() => {
  const WELCOME = "Bienvenue dans le chat v.1, enregistrez-vous avec la commande /pseudo";
  const PROMPT = "Entrez votre pseudo: ";
  const INVALID = "Rentrez un pseudo correct";
  const TAKEN = "Attention ce pseudo existe deja";
  const BYE = "Deconnexion";
  const RULE = "----------------------";
  const LIST_TITLE = "Utilisateurs en ligne:";
  const STAMPED = /^\[(\d{1,2})\.(\d{1,2})\.(\d{1,2})\]-(.*)$/s;
  const LINK = /https?:\/\/[^\s<>"']+/g;
  const FIRST_DELAY = 500; // ms before the first reconnection, then doubled
  const MOST_DELAY = 15000;

  const $ = (id) => document.getElementById(id);
  const status = $("status");
  const joinForm = $("join");
  const nickInput = $("nick");
  const joinError = $("join-error");
  const sendForm = $("send");
  const messageInput = $("message");
  const log = $("log");
  const users = $("users");
  const count = $("count");
  const unread = $("unread");
  const people = $("people");

  let socket = null;
  let nick = null; // the nickname asked for, kept to register again
  let registered = false;
  let everJoined = false; // a TAKEN after a reconnection is our old connection
  let leaving = false; // the user typed /quit: no reconnection
  let attempt = 0;
  let takenRetries = 0;
  let inList = false; // inside a user list block
  let listNames = [];
  let showList = false; // the user asked /list: show the block in the log
  let unreadCount = 0;
  const history = [];
  let historyAt = 0;
  let draft = "";

  // Connection, and reconnection with backoff

  function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(`${scheme}//${location.host}/ws`);
    socket.addEventListener("open", () => {
      attempt = 0;
      setStatus("connected", "connecté");
      if (nick !== null) {
        socket.send(`/pseudo ${nick}`);
      }
    });
    socket.addEventListener("message", (event) => receive(String(event.data)));
    socket.addEventListener("close", (event) => {
      socket = null;
      const wasRegistered = registered;
      registered = false;
      if (event.code === 1009 || event.code === 1003) {
        notice(`Connexion fermée par le serveur : ${event.reason}`, "error");
      }
      if (leaving) {
        setStatus("closed", "déconnecté");
        return;
      }
      attempt += 1;
      const delay = Math.min(MOST_DELAY, FIRST_DELAY * 2 ** (attempt - 1));
      setStatus("reconnecting", `reconnexion… (essai ${attempt})`);
      if (wasRegistered) {
        notice("Connexion perdue : reconnexion…", "error");
      }
      setTimeout(connect, delay * (0.75 + Math.random() / 2));
    });
  }

  function setStatus(state, text) {
    status.dataset.state = state;
    status.textContent = text;
  }

  function send(line) {
    if (socket === null || socket.readyState !== WebSocket.OPEN) {
      return false;
    }
    socket.send(line);
    return true;
  }

  // Lines from the server

  function receive(line) {
    if (line === "ping") {
      send("pong");
      return;
    }
    if (inList || line === RULE) {
      listLine(line);
      return;
    }
    if (line === WELCOME) {
      if (nick === null) {
        showJoin();
      }
      return;
    }
    if (line === PROMPT) {
      return;
    }
    if (line === INVALID) {
      refused("Pseudo refusé : 2 à 12 caractères, lettres sans accent, chiffres, _ ou -.");
      return;
    }
    if (line === TAKEN) {
      if (everJoined && takenRetries < 20) {
        // A reconnection: the old connection may still hold the nickname
        // until the server sees it gone (its pings). Ask again shortly.
        takenRetries += 1;
        setStatus("reconnecting", `pseudo encore pris, nouvel essai (${takenRetries})…`);
        setTimeout(() => send(`/pseudo ${nick}`), 2000);
        return;
      }
      refused("Ce pseudo est déjà pris : choisissez-en un autre.");
      return;
    }
    if (nick !== null && !registered && line === `Bienvenue ${nick}`) {
      joined();
      return;
    }
    if (line === BYE) {
      notice("Déconnecté.", "notice");
      return;
    }
    const stamped = STAMPED.exec(line);
    if (stamped === null) {
      notice(line, "notice");
      return;
    }
    const time = [stamped[1], stamped[2], stamped[3]].map((n) => n.padStart(2, "0")).join(":");
    const rest = stamped[4];
    let match;
    if ((match = /^Connexion de (.+)$/s.exec(rest))) {
      addUser(match[1]);
      entry({ time, kind: "arrival", text: `${match[1]} arrive` });
    } else if ((match = /^Déconnection de (.+)$/s.exec(rest))) {
      removeUser(match[1]);
      entry({ time, kind: "departure", text: `${match[1]} s'en va` });
    } else if ((match = /^message privé de ([^:]+): (.*)$/s.exec(rest))) {
      entry({ time, kind: "private", from: match[1], text: match[2] });
    } else if ((match = /^([^:]+): (.*)$/s.exec(rest))) {
      entry({ time, kind: "public", from: match[1], text: match[2] });
    } else {
      entry({ time, kind: "notice", text: rest });
    }
  }

  function listLine(line) {
    if (!inList) {
      inList = true;
      listNames = [];
      return;
    }
    if (line === RULE) {
      inList = false;
      setUsers(listNames);
      if (showList) {
        showList = false;
        notice(`Présents : ${listNames.join(", ")}`, "notice");
      }
    } else if (line.startsWith("=>")) {
      listNames.push(line.slice(2));
    } else if (line !== LIST_TITLE) {
      if (showList) {
        notice(line, "notice");
      }
    }
  }

  // Registration

  function showJoin() {
    joinForm.hidden = false;
    nickInput.focus();
  }

  function refused(reason) {
    joinError.textContent = reason;
    joinError.hidden = false;
    registered = false;
    nick = null;
    joinForm.hidden = false;
    sendForm.hidden = true;
    nickInput.select();
    nickInput.focus();
  }

  function joined() {
    registered = true;
    everJoined = true;
    takenRetries = 0;
    setStatus("connected", `connecté : ${nick}`);
    joinError.hidden = true;
    joinForm.hidden = true;
    sendForm.hidden = false;
    document.body.classList.add("registered");
    if (document.activeElement === nickInput || document.activeElement === document.body) {
      messageInput.focus();
    }
  }

  joinForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const wanted = nickInput.value.trim();
    if (wanted === "") {
      refused("Choisissez un pseudo.");
      return;
    }
    nick = wanted;
    joinError.hidden = true;
    if (!send(`/pseudo ${wanted}`)) {
      setStatus("reconnecting", "pas encore connecté : le pseudo sera envoyé à la connexion");
    }
  });

  // Sending, and the history (arrow keys)

  sendForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const line = messageInput.value;
    if (line.trim() === "") {
      return;
    }
    if (!send(line)) {
      notice("Pas connecté : votre ligne attend, renvoyez-la une fois reconnecté.", "error");
      return; // the input keeps it
    }
    history.push(line);
    historyAt = history.length;
    draft = "";
    messageInput.value = "";
    own(line);
  });

  messageInput.addEventListener("keydown", (event) => {
    if (event.key === "ArrowUp" && historyAt > 0) {
      if (historyAt === history.length) {
        draft = messageInput.value;
      }
      historyAt -= 1;
      messageInput.value = history[historyAt];
      event.preventDefault();
    } else if (event.key === "ArrowDown" && historyAt < history.length) {
      historyAt += 1;
      messageInput.value = historyAt === history.length ? draft : history[historyAt];
      event.preventDefault();
    }
  });

  function own(line) {
    const time = new Date().toTimeString().slice(0, 8);
    const trimmed = line.trim();
    const privateTo = /^msg +(\S+) +(.*)$/s.exec(line);
    if (privateTo) {
      entry({ time, kind: "private own", from: `→ ${privateTo[1]}`, text: privateTo[2] });
    } else if (trimmed.startsWith("/")) {
      if (trimmed === "/list") {
        showList = true;
      } else if (trimmed === "/quit") {
        leaving = true;
      }
      entry({ time, kind: "command own", text: trimmed });
    } else {
      entry({ time, kind: "public own", from: nick, text: line });
    }
  }

  // The user list

  function setUsers(names) {
    users.replaceChildren();
    names.forEach(addUser);
  }

  function addUser(name) {
    if (findUser(name) !== null) {
      return;
    }
    const item = document.createElement("li");
    item.dataset.nick = name.toLowerCase();
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = name;
    button.title = `message privé à ${name}`;
    if (nick !== null && name.toLowerCase() === nick.toLowerCase()) {
      item.classList.add("me");
    }
    button.addEventListener("click", () => startPrivate(name));
    item.append(button);
    users.append(item);
    count.textContent = String(users.children.length);
  }

  function removeUser(name) {
    const item = findUser(name);
    if (item !== null) {
      item.remove();
    }
    count.textContent = String(users.children.length);
  }

  function findUser(name) {
    const key = name.toLowerCase();
    for (const item of users.children) {
      if (item.dataset.nick === key) {
        return item;
      }
    }
    return null;
  }

  function startPrivate(name) {
    messageInput.value = `msg ${name} `;
    messageInput.focus();
    if (window.matchMedia("(max-width: 40rem)").matches) {
      people.open = false;
    }
  }

  // The conversation: text only, links made clickable, own nick marked

  function entry({ time, kind, from, text }) {
    const item = document.createElement("li");
    item.className = kind;
    const stamp = document.createElement("time");
    stamp.textContent = time;
    item.append(stamp, " ");
    if (kind.startsWith("private")) {
      const label = document.createElement("span");
      label.className = "tag";
      label.textContent = "privé";
      item.append(label, " ");
    }
    if (from !== undefined) {
      const who = document.createElement(kind.includes("own") ? "span" : "button");
      who.className = "from";
      who.textContent = from;
      if (who instanceof HTMLButtonElement) {
        who.type = "button";
        who.title = `message privé à ${from}`;
        who.addEventListener("click", () => startPrivate(from));
      }
      item.append(who, " ");
    }
    const body = document.createElement("span");
    body.className = "text";
    appendText(body, text, from !== undefined && !kind.includes("own"));
    item.append(body);
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    log.append(item);
    if (atBottom && !document.hidden) {
      item.scrollIntoView({ block: "end" });
    } else if (!kind.includes("own")) {
      markUnread();
    }
  }

  function notice(text, kind) {
    entry({ time: new Date().toTimeString().slice(0, 8), kind, text });
  }

  function appendText(parent, text, highlight) {
    let at = 0;
    for (const match of text.matchAll(LINK)) {
      appendWords(parent, text.slice(at, match.index), highlight);
      parent.append(link(match[0]));
      at = match.index + match[0].length;
    }
    appendWords(parent, text.slice(at), highlight);
  }

  function link(url) {
    let parsed = null;
    try {
      parsed = new URL(url);
    } catch {
      return document.createTextNode(url);
    }
    if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
      return document.createTextNode(url);
    }
    const anchor = document.createElement("a");
    anchor.href = parsed.href;
    anchor.rel = "noopener noreferrer";
    anchor.target = "_blank";
    anchor.textContent = url;
    return anchor;
  }

  function appendWords(parent, text, highlight) {
    if (!highlight || nick === null || text === "") {
      parent.append(text);
      return;
    }
    const lower = text.toLowerCase();
    const key = nick.toLowerCase();
    let at = 0;
    let found;
    while ((found = lower.indexOf(key, at)) >= 0) {
      parent.append(text.slice(at, found));
      const mark = document.createElement("mark");
      mark.textContent = text.slice(found, found + key.length);
      parent.append(mark);
      at = found + key.length;
    }
    parent.append(text.slice(at));
  }

  // Unread lines: the tab hidden, or the conversation scrolled up

  function markUnread() {
    unreadCount += 1;
    unread.textContent = `nouveaux messages (${unreadCount})`;
    unread.hidden = false;
    document.title = `(${unreadCount}) chat`;
  }

  function clearUnread() {
    unreadCount = 0;
    unread.hidden = true;
    document.title = "chat";
  }

  unread.addEventListener("click", () => {
    log.lastElementChild?.scrollIntoView({ block: "end" });
    clearUnread();
    messageInput.focus();
  });
  log.addEventListener("scroll", () => {
    if (log.scrollHeight - log.scrollTop - log.clientHeight < 40 && !document.hidden) {
      clearUnread();
    }
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && log.scrollHeight - log.scrollTop - log.clientHeight < 40) {
      clearUnread();
    }
  });

  if (window.matchMedia("(max-width: 40rem)").matches) {
    people.open = false;
  }
  connect();
})();
