// The chat page: the line protocol of docs/protocol.md over the WebSocket at
// /ws. Each server line is one text message; each line typed is one message.
// Every line is shown as text (textContent), never as HTML.
"use strict";

// The blocks of kept lines the server answers with (docs/protocol.md,
// "History"): pure, without the page, so that tests run them under node
// (tests/test_web_catchup.py). A kept line is identified by its number in
// the server's history, given by a block's header: never by its text.
const blocks = (() => {
  const STAMP = /^\[\d{1,2}\.\d{1,2}\.\d{1,2}\]-/;
  const ROOM_TAG = /^#[a-z0-9_-]{1,24} /;
  // The line naming a day before its lines in a block (docs/protocol.md):
  // "--- lundi 7 décembre 2026 ---".
  const WEEKDAY = "lundi|mardi|mercredi|jeudi|vendredi|samedi|dimanche";
  const MONTH =
    "janvier|février|mars|avril|mai|juin|juillet|août|septembre|octobre|novembre|décembre";
  const DAY = new RegExp(`^--- (${WEEKDAY}) (1er|[2-9]|[12]\\d|3[01]) (${MONTH}) \\d{4} ---$`);
  // "/history N" and "/history N avant K": the second says its lines' numbers.
  const HISTORY = /^--- (historique \(\d+ lignes?)(?:, n° (\d+) à \d+)?\) ---$/;
  // "/unread": what was said since the nickname's previous visit.
  const UNREAD =
    /^--- (\d+ messages? depuis votre dernière visite(?:, voici les \d+ derniers)?) \(n° (\d+) à \d+\) ---$/;

  function isDay(line) {
    return DAY.test(line);
  }

  // The header of a block: what it is ("history" or "unread"), the text
  // a separator shows of it (without the numbers), and the number of its
  // first line (null for a plain "/history N"). Not a header: null.
  function head(line) {
    let match;
    if ((match = HISTORY.exec(line))) {
      const first = match[2] === undefined ? null : Number(match[2]);
      return { kind: "history", text: `${match[1]})`, first };
    } else if ((match = UNREAD.exec(line))) {
      return { kind: "unread", text: match[1], first: Number(match[2]) };
    }
    return null;
  }

  // The lines of a block read up to its end when the page registered as
  // NICK, that it did not get live: those before its own arrival (the last
  // arrival of NICK: a nickname is one user at a time), the lines after it
  // having come live. No arrival of NICK (none past --join-notice-limit
  // users): all of them.
  // A room's lines are tagged with its name ("[H.M.S]-#salle Connexion de
  // NICK"), the lobby's are not.
  function beforeArrival(lines, nick) {
    const arrival = `Connexion de ${nick}`.toLowerCase();
    const untagged = (line) => line.replace(STAMP, "").replace(ROOM_TAG, "").toLowerCase();
    const at = lines.findLastIndex((line) => untagged(line) === arrival);
    return at < 0 ? lines : lines.slice(0, at);
  }

  // The lines of the /unread a reconnection asks, less those the page
  // had: a connection lost (or pinged out) gets from the server every line
  // since the last ping it answered (docs/protocol.md, "/unread"), as the
  // lines written to it after that may never have reached it. HEARD: the
  // lines the page got live lately, as they came; SAID: the page's own
  // lines lately, each as the server writes it without its stamp
  // ("alice: text", "#salle alice: text"). Each of them leaves out one
  // line of the block, the first equal to it; a day line left with no
  // line after it goes too.
  function unheard(lines, heard, said) {
    const count = (keys) => {
      const counts = new Map();
      for (const key of keys) {
        counts.set(key, (counts.get(key) ?? 0) + 1);
      }
      return counts;
    };
    const had = count(heard);
    const sent = count(said);
    const take = (counts, key) => {
      const n = counts.get(key) ?? 0;
      counts.set(key, n - 1);
      return n > 0;
    };
    const kept = lines.filter(
      (line) => isDay(line) || !(take(had, line) || take(sent, line.replace(STAMP, ""))),
    );
    const dated = (at) => at + 1 < kept.length && !isDay(kept[at + 1]);
    return kept.filter((line, at) => !isDay(line) || dated(at));
  }

  return { beforeArrival, head, isDay, unheard };
})();

// A line typed here as the page shows it and keeps it for the arrow keys:
// the password of /op, /register, /unregister or /pseudo NICK PASSWORD
// hidden (pure, for the tests too).
function withoutPassword(line) {
  return line.replace(
    /^(\s*(?:\/(?:op|register|unregister) +|\/pseudo +\S+ +))\S.*$/s,
    "$1••••••••",
  );
}

// Whether TEXT mentions NICK: the nickname as a word of its own, whatever
// the case ("Alice," and "@alice" do, "malice" does not), as a nickname is
// letters, digits, _ and - (pure, for the tests too).
function mentions(text, nick) {
  const key = nick.toLowerCase();
  const lower = text.toLowerCase();
  const part = /[a-z0-9_-]/;
  for (let at = lower.indexOf(key); at >= 0; at = lower.indexOf(key, at + 1)) {
    const before = at === 0 ? "" : lower[at - 1];
    const after = lower.charAt(at + key.length);
    if (!part.test(before) && !part.test(after)) {
      return true;
    }
  }
  return false;
}

// A room's name as the server writes it ("#salle"), from what a user typed
// or a link's fragment held ("salle", "#Salle"); null if it breaks the rule
// of docs/protocol.md ("Rooms"): 1 to 24 of a-z, 0-9, _ and -, any case
// (pure, for the tests too).
function roomName(text) {
  const match = /^#?([A-Za-z0-9_-]{1,24})$/.exec(text.trim());
  return match === null ? null : `#${match[1].toLowerCase()}`;
}

if (typeof document === "undefined") {
  // node, for the tests: the page below does not run
  module.exports = { blocks, mentions, roomName, withoutPassword };
}

(() => {
  if (typeof document === "undefined") {
    return;
  }
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
  // The history (docs/protocol.md, "History"): the page asks for it itself,
  // what was said since the last visit, then older lines as the user
  // scrolls up. Blocks end with one of these; their headers: blocks.head.
  const BLOCK_ENDS = [
    "--- fin de l'historique ---",
    "--- fin des messages depuis votre dernière visite ---",
  ];
  const UNREAD_NONE = "Aucun message depuis votre dernière visite";
  const UNREAD_UNKNOWN = "Erreur : aucune visite précédente connue pour ce pseudo";
  const HISTORY_START = "--- début de l'historique ---";
  const HISTORY_OFF = "Erreur : ce serveur ne garde pas d'historique";
  const HISTORY_UNAVAILABLE =
    "Erreur : historique impossible à lire pour le moment, réessayez plus tard";
  // The single lines that answer one of the page's own requests.
  const ANSWERS = [UNREAD_NONE, UNREAD_UNKNOWN, HISTORY_START, HISTORY_OFF, HISTORY_UNAVAILABLE];
  const BLOCK_LINES = 50; // lines asked for at a time
  const EARLIER = "— messages précédents —";
  const INCOMPLETE = "— la conversation ci-dessus est peut-être incomplète —";
  const QUIET = 300; // ms the log stays aria-busy after a history block goes in
  // Protected nicknames: the server asks for the password, the next line.
  const ASK_PASSWORD = "Ce pseudo est protégé : entrez son mot de passe";
  const SAVED = "chatproto.remember"; // localStorage: {nick, password}
  // /search's answer: a block, or one line (docs/protocol.md).
  const SEARCH_HEAD = /^--- recherche « .* » \(\d+ lignes?\) ---$/s;
  const SEARCH_END = "--- fin de la recherche ---";
  const NO_MATCH = /^Aucune ligne ne contient « .* »$/s;
  // Rooms (docs/protocol.md, "Rooms"): the lobby and the rooms joined, each
  // with its lines, members and unread count; the one shown is the
  // server's current room, where plain lines go.
  const LOBBY = "#accueil";
  const CURRENT = /^Salon courant : (#[a-z0-9_-]{1,24})$/;
  const LEFT = /^Vous avez quitté (#[a-z0-9_-]{1,24})$/;
  const TOPIC = /^Sujet de (#[a-z0-9_-]{1,24}) : (.*)$/s;
  const NO_TOPIC = /^(#[a-z0-9_-]{1,24}) n'a pas de sujet$/;
  // The errors that answer a /join (and nothing else the page sends).
  const JOIN_ERRORS = [
    /^Erreur : tapez \/join /,
    /^Erreur : trop de salons sur ce serveur /,
    /^Erreur : vous êtes déjà dans \d+ salons/,
    /^Erreur : salons impossibles pour le moment /,
  ];
  const ROOM_RULE = "1 à 24 lettres a-z, chiffres, _ ou -";
  // The lines typed (a paste of many) go out paced, as the terminal client
  // paces them (docs/client.md, "Pacing"): the server's flood control takes
  // 5 lines at once, then 2 a second, and cuts a user past --flood-queue
  // (100) lines waiting. So: 4 at once, then 1.9 a second.
  const PACE_BURST = 4;
  const PACE_INTERVAL = 530; // ms a line past the burst waits
  // A message past --max-line (4096 by default) bytes closes the
  // connection (code 1009): such a line is refused here, never sent.
  const MAX_LINE_BYTES = 4096;
  const utf8 = new TextEncoder();
  // The lines got live and said lately, kept to leave them out of the
  // /unread of a reconnection (blocks.unheard): what a server writes
  // between two pings, and more.
  const HEARD_MOST = 1000;

  const $ = (id) => document.getElementById(id);
  const status = $("status");
  const joinForm = $("join");
  const nickInput = $("nick");
  const joinError = $("join-error");
  const sendForm = $("send");
  const messageInput = $("message");
  const log = $("log"); // the list of lines, which scrolls
  const live = $("live"); // the live region (role log) around it
  const users = $("users");
  const count = $("count");
  const unread = $("unread");
  const people = $("people");
  const rememberBox = $("remember");
  const passwordForm = $("password");
  const passwordInput = $("password-input");
  const searchForm = $("search");
  const searchInput = $("search-words");
  const results = $("results");
  const resultsStatus = $("results-status");
  const found = $("found");
  const closeResults = $("results-close");
  const alertsButton = $("alerts");
  const roomsPanel = $("rooms");
  const roomList = $("room-list");
  const roomsUnread = $("rooms-unread");
  const joinRoomForm = $("join-room");
  const roomInput = $("room-name");
  const roomTitle = $("room-title");
  const topicLine = $("topic");
  const partButton = $("part");

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
  let unreadCount = 0; // lines of the conversation shown not seen yet
  let titleCount = 0; // lines not seen, the title's count: those, and other rooms' while hidden
  const history = [];
  let historyAt = 0;
  let draft = "";
  // The rooms, by name (the lobby first): their lines (the shown room's in
  // #log, the others' in a list of their own, out of the document, which
  // no screen reader reads), members, unread counts and history.
  const rooms = new Map();
  let shown = null; // the room whose lines are in #log
  const lobby = makeRoom(LOBBY);
  shown = lobby;
  lobby.list = log;
  lobby.loaded = true; // its history: /unread, on registering
  let serverRoom = LOBBY; // the server's current room, as it last said
  let joining = 0; // /join lines sent and not answered yet
  let parting = false; // the current room left: a "Salon courant" follows, no /join's
  let topicAsked = 0; // /topic lines typed: their answers are shown
  let wanted = null; // the room the link names, joined once registered
  let asked = []; // the page's own requests not answered whole yet, oldest first
  let block = null; // a block being received: its head, lines, request
  let quietTimer = null;
  // "se souvenir de moi": what localStorage keeps, read once on loading.
  let saved = load();
  let keep = null; // the password sent, to be saved once registered (box ticked)
  let answering = false; // a password was sent, its answer has not come
  let answeringSaved = false; // that password is the saved one
  let searches = 0; // /search lines sent and not answered yet
  let searchBlock = null; // the items of a /search block being received
  let outbox = []; // lines typed, waiting their turn (PACE_*)
  let paceTokens = PACE_BURST;
  let paceAt = 0; // when paceTokens was counted (performance.now())
  let paceTimer = null;
  const heard = []; // the stamped lines got live lately (HEARD_MOST)
  const said = []; // the page's own public lines lately, as the server writes them
  // The page's lobby lines sent since the last ping it got ("alice: text"
  // and the text), null before its first ping on this connection; after a
  // cut, those its /unread lacks never reached the server (unconfirmed).
  let afterPing = null;
  let unconfirmed = []; // those of the connection lost in a cut

  // Connection, and reconnection with backoff

  function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(`${scheme}//${location.host}/ws`);
    socket.addEventListener("open", () => {
      attempt = 0;
      setStatus("connected", "connecté");
      if (nick !== null) {
        askNick();
      }
    });
    socket.addEventListener("message", (event) => receive(String(event.data)));
    socket.addEventListener("close", (event) => {
      socket = null;
      // A cut (no close frame from the server): the lines sent since the
      // last ping may never have reached it; the /unread of the next
      // connection tells (lost).
      unconfirmed = event.code === 1006 && afterPing !== null ? afterPing : [];
      afterPing = null;
      const wasRegistered = registered;
      registered = false;
      asked = [];
      block = null;
      searches = 0;
      searchBlock = null;
      answering = false;
      serverRoom = LOBBY; // a new connection is in the lobby only
      joining = 0;
      parting = false;
      topicAsked = 0;
      passwordInput.value = "";
      passwordForm.hidden = true;
      unsent();
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
      afterPing = [];
      return;
    }
    if (block === null && (searchBlock !== null || SEARCH_HEAD.test(line))) {
      searchLine(line);
      return;
    }
    if (block !== null || blocks.head(line) !== null) {
      blockLine(line);
      return;
    }
    if (asked.length > 0 && ANSWERS.includes(line)) {
      answered(asked.shift(), line);
      return;
    }
    if (registered && roomAnswer(line)) {
      return;
    }
    if (searches > 0 && (NO_MATCH.test(line) || line.startsWith("Erreur : "))) {
      searches -= 1;
      showResults(line, line.startsWith("Erreur : ") ? "error" : "");
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
    if (line === ASK_PASSWORD && nick !== null && !registered) {
      askPassword();
      return;
    }
    if (nick !== null && !registered && line.startsWith("Erreur : ")) {
      // the registration's answer (too many password tries, a cluster
      // unreachable): say so, and let the user try again. After a
      // password, the server takes the next line as the password again:
      // the password field comes back, not the nickname.
      const pending = answering;
      answering = false;
      if (pending) {
        passwordAgain(line);
      } else {
        refused(line);
      }
      return;
    }
    if (line === INVALID) {
      refused("Pseudo refusé : 2 à 12 caractères, lettres sans accent, chiffres, _ ou -.");
      return;
    }
    if (line === TAKEN) {
      // A wrong password is answered as a taken nickname, and so is the
      // right one while the nickname is in use: the old connection of a
      // reconnection, or another tab of this browser.
      const wrong = answering;
      const withSaved = answering && answeringSaved;
      answering = false;
      if (everJoined && takenRetries < 20) {
        // A reconnection: the old connection may still hold the nickname
        // until the server sees it gone (its pings). Ask again shortly,
        // with the saved password, if any, kept.
        takenRetries += 1;
        setStatus("reconnecting", `pseudo encore pris, nouvel essai (${takenRetries})…`);
        setTimeout(askNick, 2000);
        return;
      }
      const name = nick;
      heldElsewhere(name).then((held) => {
        if (held) {
          refused(`${name} est déjà connecté dans un autre onglet de ce navigateur.`);
          return;
        }
        if (withSaved) {
          forget(); // the saved password is wrong: it changed
        }
        refused(
          wrong
            ? "Mot de passe refusé (ou pseudo déjà pris) : réessayez."
            : "Ce pseudo est déjà pris : choisissez-en un autre.",
        );
      });
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
    const parsed = parse(line);
    if (parsed === null) {
      notice(line, "notice");
      return;
    }
    if (parsed.kind !== "private") {
      keepLast(heard, line);
    }
    // A room's line goes to its room; the lobby's lines to the lobby; a
    // private line, or the server's, where the user is.
    const room =
      parsed.room !== undefined
        ? ensureRoom(parsed.room)
        : ["public", "arrival", "departure"].includes(parsed.kind)
          ? lobby
          : shown;
    if (parsed.kind === "arrival") {
      addMember(room, parsed.who);
    } else if (parsed.kind === "departure" && room === lobby) {
      for (const each of rooms.values()) {
        removeMember(each, parsed.who); // gone from the chat: from every room
      }
    } else if (parsed.kind === "departure") {
      removeMember(room, parsed.who);
    } else if (parsed.topic !== undefined) {
      room.topic = parsed.topic;
      showHead();
    }
    entry(parsed, room);
    if (calls(parsed)) {
      notify(parsed);
    }
  }

  // A stamped line, as an entry of the conversation (null: not stamped).
  function parse(line) {
    const stamped = STAMPED.exec(line);
    if (stamped === null) {
      return null;
    }
    const time = [stamped[1], stamped[2], stamped[3]].map((n) => n.padStart(2, "0")).join(":");
    let rest = stamped[4];
    let match;
    if ((match = /^(#[a-z0-9_-]{1,24}) (.*)$/s.exec(rest))) {
      // a room's line: a nickname never starts with #
      const room = match[1];
      rest = match[2];
      if ((match = /^Connexion de (.+)$/s.exec(rest))) {
        return { time, room, kind: "arrival", who: match[1], text: `${match[1]} arrive` };
      } else if ((match = /^Départ de (\S+)$/s.exec(rest))) {
        return { time, room, kind: "departure", who: match[1], text: `${match[1]} quitte ${room}` };
      } else if ((match = /^Sujet : (.*) \(par ([^)]*)\)$/s.exec(rest))) {
        const text = `${match[2]} change le sujet : ${match[1]}`;
        return { time, room, kind: "notice topic", topic: match[1], text };
      } else if ((match = /^([^:]+): (.*)$/s.exec(rest))) {
        return { time, room, kind: "public", from: match[1], text: match[2] };
      }
      return { time, room, kind: "notice", text: rest };
    }
    if ((match = /^Connexion de (.+)$/s.exec(rest))) {
      return { time, kind: "arrival", who: match[1], text: `${match[1]} arrive` };
    } else if ((match = /^Déconnection de (\S+)( \(.*\))?$/s.exec(rest))) {
      // a kick or a ban says why after the nickname
      const text = `${match[1]} s'en va${match[2] ?? ""}`;
      return { time, kind: "departure", who: match[1], text };
    } else if ((match = /^message privé de ([^:]+): (.*)$/s.exec(rest))) {
      return { time, kind: "private", from: match[1], text: match[2] };
    } else if ((match = /^([^:]+): (.*)$/s.exec(rest))) {
      return { time, kind: "public", from: match[1], text: match[2] };
    }
    return { time, kind: "notice", text: rest };
  }

  // The history: asked for on registering, shown where it belongs

  // Registered: ask what was said since this nickname's last visit (the
  // server knows it: the last line it gave it), to go at the point asked
  // from, above any line that comes live after. AGAIN: after a reconnection.
  function askUnread(again) {
    ask("/unread", { kind: "unread", room: lobby, at: lobby.list.lastElementChild, again });
  }

  // The last BLOCK_LINES lines of ROOM (the server's current room), when
  // nothing tells the page what it missed: at AT, after the separator LEAD
  // if any (a reconnection), else above the separator EARLIER (a first
  // visit, or a room's first showing).
  function askLast(room, at, lead) {
    ask(`/history ${BLOCK_LINES} avant fin`, { kind: "last", room, at, lead });
  }

  // The conversation scrolled to its top, or too short to scroll: the lines
  // before the first one shown, one request at a time, until the start. A
  // room's history is asked while it is the server's current room.
  function askOlder() {
    const room = shown;
    if (
      registered &&
      room.first !== null &&
      !room.atStart &&
      room.name === serverRoom &&
      joining === 0 &&
      !asked.some((r) => r.kind === "older")
    ) {
      ask(`/history ${BLOCK_LINES} avant ${room.first}`, { kind: "older", room });
    }
  }

  function ask(line, request) {
    if (send(line)) {
      asked.push(request);
    }
  }

  // A line of a block: its header, a kept line or a day line, its end. A
  // block the page did not ask for (a /history typed) is shown as it comes.
  function blockLine(line) {
    if (block === null) {
      const head = blocks.head(line);
      const unread = head.kind === "unread";
      const mine =
        head.first !== null && asked.length > 0 && (asked[0].kind === "unread") === unread;
      block = { head, lines: [], request: mine ? asked[0] : null };
      if (block.request === null) {
        separator(framed(line));
      }
      return;
    }
    if (!BLOCK_ENDS.includes(line)) {
      if (block.request === null) {
        typedLine(line);
      } else {
        block.lines.push(line);
      }
      return;
    }
    const { head, lines, request } = block;
    block = null;
    if (request === null) {
      separator(framed(line));
      return;
    }
    asked.shift();
    const room = request.room;
    room.first = room.first === null ? head.first : Math.min(room.first, head.first);
    if (request.kind === "unread") {
      showUnread(request, head, lines);
    } else if (request.kind === "last") {
      showLast(request, lines);
    } else {
      showOlder(room, lines);
    }
  }

  // A line of a block typed by the user: shown as it comes, with no effect
  // on the user list.
  function typedLine(line) {
    if (blocks.isDay(line)) {
      separator(framed(line));
    } else {
      entry(historyEntry(line) ?? { time: "", kind: "notice", text: line });
    }
  }

  // KEY at the end of LIST, which keeps the HEARD_MOST last.
  function keepLast(list, key) {
    list.push(key);
    if (list.length > HEARD_MOST) {
      list.shift();
    }
  }

  function showUnread({ room, at, again }, head, given) {
    if (again) {
      lost(given);
    }
    // After a cut: the lines the page had live or said are not shown again.
    const lines = again ? blocks.unheard(given, heard, said) : given;
    if (lines.length === 0) {
      fill();
      return;
    }
    if (lines.length < given.length && !head.text.includes(",")) {
      const n = lines.filter((line) => !blocks.isDay(line)).length;
      head = { ...head, text: `${n} message${n > 1 ? "s" : ""} depuis votre dernière visite` };
    }
    // What a cut made the page miss is unread too, for a hidden tab or a
    // reader above.
    if (again && room === shown && (document.hidden || !atBottom())) {
      for (const line of lines) {
        if (!blocks.isDay(line)) {
          markUnread();
        }
      }
    }
    insertQuietly(room, at, [makeSeparator(`— ${head.text} —`), ...lines.map(keptItem)]);
    fill();
  }

  function showLast({ room, at, lead }, lines) {
    const items = blocks.beforeArrival(lines, nick).map(keptItem);
    if (lead !== null) {
      insertQuietly(room, at, [makeSeparator(lead), ...items]);
    } else if (items.length > 0) {
      insertQuietly(room, at, [...items, makeSeparator(EARLIER)]);
    }
    fill();
  }

  // Older lines go on top, what the user looks at kept in place. The day
  // line of the block's last day, if on top already, goes: its day goes on.
  function showOlder(room, lines) {
    const top = room.list.firstElementChild;
    const lastDay = lines.findLast(blocks.isDay);
    const goesOn = lastDay !== undefined && top?.textContent === framed(lastDay);
    prepend(room, lines.map(keptItem), goesOn ? top : null);
    fill();
  }

  // ITEMS on top of ROOM's lines, in place of REPLACED if not null, the
  // lines below them staying where the user sees them.
  function prepend(room, items, replaced) {
    const { scrollTop, scrollHeight } = log;
    replaced?.remove();
    insertQuietly(room, null, items);
    if (room === shown) {
      log.scrollTop = scrollTop + log.scrollHeight - scrollHeight;
    }
  }

  // A line answering one of the page's requests on its own.
  function answered(request, line) {
    const room = request.room;
    if (line === HISTORY_START) {
      room.atStart = true;
      const item = makeSeparator("— début de l'historique —");
      if (request.kind === "older") {
        prepend(room, [item], null);
      } else {
        const lead = request.lead === null ? [] : [makeSeparator(request.lead)];
        insertQuietly(room, request.at, [...lead, item]);
      }
    } else if (line === HISTORY_OFF) {
      room.atStart = true; // nothing kept: nothing to show
    } else if (line === HISTORY_UNAVAILABLE) {
      if (request.kind !== "older") {
        // said at the point asked from; older lines: asked again on scrolling
        const what = request.again ? "messages manqués indisponibles" : "historique indisponible";
        insertAt(room, request.at, [makeSeparator(`— ${what} pour le moment —`)]);
      }
    } else if (request.kind === "unread" && line === UNREAD_UNKNOWN) {
      // A reconnection: the server forgot this nickname's position (a
      // restart, a long cut); what was missed is not known.
      lastOfLobby(request.at, request.again ? INCOMPLETE : null);
    } else if (request.kind === "unread" && !request.again) {
      lastOfLobby(request.at, null); // nothing said since: the last lines
    } else if (request.kind === "unread" && line === UNREAD_NONE) {
      lost([]);
    }
    if (request.kind === "unread") {
      unconfirmed = []; // what the server says tells nothing of them
    }
  }

  // After a cut, the /unread of the new connection (LINES) gives every
  // lobby line since the last ping the server knows the page answered: a
  // line the page sent after the last ping it got is among them if the
  // server got it. Those that are not go back to the message field.
  function lost(lines) {
    const given = new Set(lines.map((line) => line.replace(/^\[[\d.]+\]-/, "")));
    const missing = unconfirmed.filter(({ key }) => !given.has(key)).map(({ text }) => text);
    unconfirmed = [];
    if (missing.length === 0) {
      return;
    }
    messageInput.value = [...missing, messageInput.value].filter((l) => l !== "").join("\n");
    const what =
      missing.length > 1
        ? `${missing.length} lignes envoyées pendant la coupure ne sont pas arrivées : les voici`
        : "1 ligne envoyée pendant la coupure n'est pas arrivée : la voici";
    notice(`${what} dans le champ, à renvoyer.`, "error");
  }

  // The lobby's last lines (/unread said nothing new, or knows no visit):
  // asked in the lobby, so asked now only if it is the server's current
  // room, else once it is shown again.
  function lastOfLobby(at, lead) {
    if (serverRoom === LOBBY && joining === 0) {
      askLast(lobby, at, lead);
    } else {
      lobby.loaded = false; // asked when shown (showRoom)
      lobby.at = at;
      lobby.lead = lead;
    }
  }

  // Too short to scroll: older lines, for the user to scroll up to them.
  function fill() {
    if (log.scrollHeight <= log.clientHeight) {
      askOlder();
    }
  }

  function atBottom() {
    return log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  }

  // A line of a block as an item of a list: a day line as a separator.
  function keptItem(kept) {
    if (blocks.isDay(kept)) {
      return makeSeparator(framed(kept));
    }
    return makeEntry(historyEntry(kept) ?? { time: "", kind: "notice", text: kept });
  }

  // "--- lundi 7 décembre 2026 ---" as a separator shows it.
  function framed(line) {
    return `— ${line.slice(4, -4)} —`;
  }

  function historyEntry(line) {
    const kept = parse(line);
    if (kept === null) {
      return null;
    }
    kept.kind += " history";
    const mine = nick !== null && kept.from?.toLowerCase() === nick.toLowerCase();
    if (mine) {
      kept.kind = kept.kind.replace("public", "public own");
    }
    return kept;
  }

  // Insert ITEMS in ROOM's lines after AT (null: at the top), the
  // conversation kept at its bottom if it was there.
  function insertAt(room, at, items) {
    const wasAtBottom = atBottom();
    if (at === null) {
      room.list.prepend(...items);
    } else {
      at.after(...items);
    }
    if (room === shown && wasAtBottom && !document.hidden) {
      log.lastElementChild?.scrollIntoView({ block: "end" });
    }
  }

  // A history block (the last lines, what was said since, older lines) goes in
  // while the log is aria-busy, so that a screen reader does not read out
  // every line of it as it does a live line. The attribute stays QUIET ms,
  // as the accessibility tree is updated after the insertion, not in it; a
  // live line that comes meanwhile ends it first, to be announced as ever.
  function insertQuietly(room, at, items) {
    if (room === shown) {
      quietly();
    }
    insertAt(room, at, items);
  }

  // The live region busy for QUIET ms: what goes in meanwhile is not read.
  function quietly() {
    live.setAttribute("aria-busy", "true");
    clearTimeout(quietTimer);
    quietTimer = setTimeout(endQuiet, QUIET);
  }

  function endQuiet() {
    clearTimeout(quietTimer);
    live.removeAttribute("aria-busy");
  }

  function makeSeparator(text) {
    const item = document.createElement("li");
    item.className = "separator";
    item.textContent = text;
    return item;
  }

  function separator(text) {
    insertAt(shown, log.lastElementChild, [makeSeparator(text)]);
  }

  function listLine(line) {
    if (!inList) {
      inList = true;
      listNames = [];
      return;
    }
    if (line === RULE) {
      inList = false;
      // the members of the server's current room: registering (the lobby),
      // a /join's answer, a /list
      setMembers(ensureRoom(serverRoom), listNames);
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
    joinForm.classList.remove("chosen");
    joinForm.hidden = false;
    passwordForm.hidden = true;
    sendForm.hidden = true;
    searchForm.hidden = true;
    nickInput.select();
    nickInput.focus();
  }

  // Register as NICK (again, after a reconnection). Nothing is kept to
  // save until a password is sent for it.
  function askNick() {
    keep = null;
    return send(`/pseudo ${nick}`);
  }

  // The nickname is protected: the saved password if it is this
  // nickname's, else the password field, in place of the message box
  // (the join form keeps its box "se souvenir de moi" only).
  function askPassword() {
    if (saved?.nick === nick && saved.password !== null) {
      sendPassword(saved.password, true);
      return;
    }
    joinForm.classList.add("chosen");
    sendForm.hidden = true;
    passwordForm.hidden = false;
    passwordInput.focus();
  }

  // The password was not checked (too many tries, or the server cannot
  // read its accounts now): the field again, with why. A saved password is
  // not sent again by itself: the user decides when to try.
  function passwordAgain(reason) {
    joinError.textContent = reason;
    joinError.hidden = false;
    joinForm.classList.add("chosen");
    sendForm.hidden = true;
    passwordForm.hidden = false;
    passwordInput.focus();
  }

  function sendPassword(password, isSaved = false) {
    if (send(password)) {
      answering = true;
      answeringSaved = isSaved;
      keep = rememberBox.checked ? password : null;
    }
  }

  passwordForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const password = passwordInput.value;
    if (password === "") {
      return;
    }
    passwordInput.value = "";
    passwordForm.hidden = true;
    sendPassword(password);
  });

  function joined() {
    const again = everJoined;
    registered = true;
    everJoined = true;
    takenRetries = 0;
    answering = false;
    // Its arrival, as the server keeps it: the page does not get it live,
    // and after a cut it may be among what /unread gives (blocks.unheard).
    keepLast(said, `Connexion de ${nick}`);
    if (rememberBox.checked) {
      save({ nick, password: keep });
    }
    keep = null;
    setStatus("connected", `connecté : ${nick}`);
    joinError.hidden = true;
    joinForm.classList.add("chosen");
    joinForm.hidden = !rememberBox.checked; // kept to untick it
    sendForm.hidden = false;
    searchForm.hidden = false;
    showAlertsButton();
    document.body.classList.add("registered");
    if (document.activeElement === nickInput || document.activeElement === document.body) {
      messageInput.focus();
    }
    askUnread(again);
    if (again) {
      // a new connection is in the lobby only: the rooms again, the shown
      // one last (the current one); what they said meanwhile is not known
      for (const room of rooms.values()) {
        if (room !== lobby) {
          insertAt(room, room.list.lastElementChild, [makeSeparator(INCOMPLETE)]);
        }
        if (room !== lobby && room !== shown) {
          sendJoin(room.name);
        }
      }
      if (shown !== lobby) {
        sendJoin(shown.name);
      }
    } else if (wanted !== null && wanted !== LOBBY) {
      sendJoin(wanted);
    }
    wanted = null;
    joinRoomForm.hidden = false;
    showHead();
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
    if (!askNick()) {
      setStatus("reconnecting", "pas encore connecté : le pseudo sera envoyé à la connexion");
    }
  });

  // "se souvenir de moi": the nickname and its password in localStorage,
  // saved once registered with the box ticked, and only then; unticking
  // the box or a wrong password removes them.
  function load() {
    try {
      const text = localStorage.getItem(SAVED);
      const what = text === null ? null : JSON.parse(text);
      if (typeof what?.nick !== "string") {
        return null;
      }
      const password = typeof what.password === "string" ? what.password : null;
      return { nick: what.nick, password };
    } catch {
      return null; // nothing saved, or storage refused to this page
    }
  }

  function save(what) {
    saved = what;
    try {
      localStorage.setItem(SAVED, JSON.stringify(what));
    } catch {
      // storage refused to this page: nothing is kept
    }
  }

  function forget() {
    saved = null;
    try {
      localStorage.removeItem(SAVED);
    } catch {
      // storage refused to this page: nothing was kept
    }
  }

  rememberBox.addEventListener("change", () => {
    if (!rememberBox.checked) {
      forget();
    }
  });

  if (saved !== null) {
    nick = saved.nick; // registered as soon as connected
    nickInput.value = saved.nick;
    rememberBox.checked = true;
  }

  // The other tabs of this browser on this chat: a registered one says
  // so when another asks whether it holds a nickname, so that a second
  // tab of the same nickname (refused as a wrong password is) says why,
  // and keeps the saved password.
  const TAB_WAIT = 400; // ms a tab waits for the others' answer
  const tabs = "BroadcastChannel" in window ? new BroadcastChannel("chatproto") : null;
  tabs?.addEventListener("message", (event) => {
    const asked = event.data?.holds;
    if (registered && typeof asked === "string" && asked === nick.toLowerCase()) {
      tabs.postMessage({ held: asked });
    }
  });

  // Whether another tab of this browser holds NAME (a promise).
  function heldElsewhere(name) {
    return new Promise((resolve) => {
      if (tabs === null || name === null) {
        resolve(false);
        return;
      }
      const key = name.toLowerCase();
      const answer = (event) => {
        if (event.data?.held === key) {
          done(true);
        }
      };
      const done = (held) => {
        clearTimeout(timer);
        tabs.removeEventListener("message", answer);
        resolve(held);
      };
      const timer = setTimeout(done, TAB_WAIT, false);
      tabs.addEventListener("message", answer);
      tabs.postMessage({ holds: key });
    });
  }

  // Sending, and the history (arrow keys)

  // The field's lines, each one line of the protocol (a paste of several:
  // each its own), blank ones left out: they go out in turn (pump).
  sendForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const typed = messageInput.value;
    const lines = typed.split(/\r\n|\r|\n/).filter((line) => line.trim() !== "");
    if (lines.length === 0) {
      return;
    }
    if (socket === null || socket.readyState !== WebSocket.OPEN) {
      notice("Pas connecté : votre ligne attend, renvoyez-la une fois reconnecté.", "error");
      return; // the input keeps it
    }
    if (lines.some((line) => utf8.encode(line).length > MAX_LINE_BYTES)) {
      notice(`Ligne trop longue (plus de ${MAX_LINE_BYTES} octets) : rien n'est envoyé.`, "error");
      return; // the input keeps it
    }
    if (lines.every((line) => withoutPassword(line) === line)) {
      history.push(typed); // a password is not kept for the arrow keys
    }
    historyAt = history.length;
    draft = "";
    messageInput.value = "";
    outbox.push(...lines);
    pump();
  });

  // The lines waiting go out as the pace allows; the next turn is timed.
  function pump() {
    clearTimeout(paceTimer);
    paceTimer = null;
    const now = performance.now();
    paceTokens = Math.min(PACE_BURST, paceTokens + (now - paceAt) / PACE_INTERVAL);
    paceAt = now;
    while (outbox.length > 0 && paceTokens >= 1) {
      if (!send(outbox[0])) {
        unsent();
        return;
      }
      paceTokens -= 1;
      sent(outbox.shift());
    }
    if (outbox.length > 0) {
      paceTimer = setTimeout(pump, (1 - paceTokens) * PACE_INTERVAL);
    }
  }

  // The connection lost with lines waiting: they go back to the field,
  // before what it holds, to be sent again once reconnected.
  function unsent() {
    clearTimeout(paceTimer);
    paceTimer = null;
    if (outbox.length === 0) {
      return;
    }
    const count = outbox.length;
    messageInput.value = [...outbox, messageInput.value].filter((l) => l !== "").join("\n");
    outbox = [];
    const what =
      count > 1 ? `${count} lignes non envoyées attendent` : "1 ligne non envoyée attend";
    notice(`Pas connecté : ${what} dans le champ, renvoyez-les une fois reconnecté.`, "error");
  }

  // A line the user typed, sent: what it asks of the page, and shown.
  function sent(line) {
    if (/^\s*\/join(\s|$)/.test(line)) {
      joining += 1; // its answer: the room, or an error
    } else if (/^\s*\/topic\s*$/.test(line)) {
      topicAsked += 1;
    }
    own(withoutPassword(line));
  }

  // Enter sends, Shift+Enter starts a new line; the arrow keys go through
  // the lines sent from the field's first line (up) or last line (down).
  messageInput.addEventListener("keydown", (event) => {
    const { value, selectionStart, selectionEnd } = messageInput;
    const onFirstLine = !value.slice(0, selectionStart).includes("\n");
    const onLastLine = !value.slice(selectionEnd).includes("\n");
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      sendForm.requestSubmit();
    } else if (event.key === "ArrowUp" ? !onFirstLine : event.key === "ArrowDown" && !onLastLine) {
      // within the text: the caret moves
    } else if (event.key === "ArrowUp" && historyAt > 0) {
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
      } else if (/^\/search\b/.test(trimmed)) {
        searches += 1; // its answer goes to the search panel
      }
      entry({ time, kind: "command own", text: trimmed });
    } else {
      entry({ time, kind: "public own", from: nick, text: line });
      const key = `${serverRoom === LOBBY ? "" : `${serverRoom} `}${nick}: ${line}`;
      keepLast(said, key);
      if (serverRoom === LOBBY && joining === 0) {
        afterPing?.push({ key, text: line });
      }
    }
  }

  // Search: /search WORDS, its answer in a panel of its own

  searchForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const words = searchInput.value.trim();
    if (words === "") {
      return;
    }
    if (!send(`/search ${words}`)) {
      notice("Pas connecté : recherche impossible, réessayez une fois reconnecté.", "error");
      return;
    }
    searches += 1;
    showResults(`recherche de « ${words} »…`, "");
  });

  // A line of a /search block: its head, a kept line or a day line, its end.
  function searchLine(line) {
    if (searchBlock === null) {
      searches = Math.max(0, searches - 1);
      searchBlock = { head: line.slice(4, -4), items: [] };
    } else if (line !== SEARCH_END) {
      searchBlock.items.push(keptItem(line));
    } else {
      showResults(searchBlock.head, "", searchBlock.items);
      searchBlock = null;
    }
  }

  // The panel open, saying STATUS, with ITEMS (none: emptied).
  function showResults(status, kind, items = []) {
    resultsStatus.textContent = status;
    resultsStatus.className = kind;
    found.replaceChildren(...items);
    results.hidden = false;
  }

  function hideResults() {
    results.hidden = true;
    found.replaceChildren();
    resultsStatus.textContent = "";
    searchInput.focus();
  }

  closeResults.addEventListener("click", hideResults);
  results.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      hideResults();
    }
  });

  // Rooms: the list beside the conversation, the lobby first, then the
  // others by name. Showing a room is the server's answer to a /join
  // ("Salon courant : #NAME"), which makes it the current room there too:
  // plain lines, /list and /history then act on it.

  function makeRoom(name) {
    const room = {
      name,
      list: document.createElement("ol"), // its lines while not shown
      members: [],
      topic: null,
      unread: 0, // its lines said while not shown
      mentioned: false, // one of them mentions the user
      first: null, // the smallest line number shown (null: none yet)
      atStart: false, // nothing older to ask for: its start is shown, or none kept
      loaded: false, // its last lines asked for (on its first showing)
      at: null, // where they go, and the separator before them (the lobby's)
      lead: null,
      scroll: null, // where the user was in it (null: at the bottom)
      button: document.createElement("button"),
    };
    const item = document.createElement("li");
    room.button.type = "button";
    room.button.tabIndex = -1; // one stop for the list: the arrow keys move in it
    room.button.addEventListener("click", () => chooseRoom(room));
    item.append(room.button);
    const after = [...rooms.values()].find((other) => other.name !== LOBBY && other.name > name);
    roomList.insertBefore(item, after?.button.parentElement ?? null);
    rooms.set(name, room);
    showRoomItem(room);
    return room;
  }

  function ensureRoom(name) {
    return rooms.get(name) ?? makeRoom(name);
  }

  // The room's button: its name and unread count, read out as "#salle, 3
  // non lus" (the count only, not every line: those of the shown room
  // alone are in the live region); what is seen is part of what is said.
  function showRoomItem(room) {
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = room.name;
    const parts = [name];
    let label = room.name;
    if (room.unread > 0) {
      const badge = document.createElement("span");
      badge.className = room.mentioned ? "badge mention" : "badge";
      badge.textContent = String(room.unread);
      parts.push(" ", badge);
      label += `, ${room.unread} non lu${room.unread > 1 ? "s" : ""}`;
      if (room.mentioned) {
        label += ", vous êtes mentionné";
      }
    }
    room.button.replaceChildren(...parts);
    room.button.setAttribute("aria-label", label);
    if (room === shown) {
      room.button.setAttribute("aria-current", "true");
    } else {
      room.button.removeAttribute("aria-current");
    }
    if (shown === null) {
      return; // the lobby, being made
    }
    let others = 0;
    for (const each of rooms.values()) {
      others += each.unread;
    }
    // the panel's summary, on a phone: the shown room, the others' count
    const elsewhere = others > 1 ? ` · ${others} non lus ailleurs` : " · 1 non lu ailleurs";
    roomsUnread.textContent = `· ${shown.name}${others > 0 ? elsewhere : ""}`;
  }

  // The shown room's name and topic above its lines, and the button that
  // leaves it (not the lobby).
  function showHead() {
    roomTitle.textContent = shown.name;
    topicLine.textContent = shown.topic ?? "";
    topicLine.hidden = shown.topic === null;
    partButton.hidden = shown === lobby || !registered;
    partButton.textContent = `quitter ${shown.name}`;
    live.setAttribute("aria-label", `Conversation ${shown.name}`);
  }

  // A click on a room, or Enter on it: the server makes it current, then
  // the page shows it.
  function chooseRoom(room) {
    if (room !== shown || joining > 0) {
      sendJoin(room.name);
    }
    closeRoomsPanel();
  }

  // On a phone, the panel of rooms closes once a room is chosen, the focus
  // on its summary (not lost with the panel's contents).
  function closeRoomsPanel() {
    if (window.matchMedia("(max-width: 40rem)").matches) {
      roomsPanel.open = false;
      roomsPanel.querySelector("summary").focus();
    }
  }

  function sendJoin(name) {
    if (send(`/join ${name}`)) {
      joining += 1;
      return true;
    }
    notice("Pas connecté : réessayez une fois reconnecté.", "error");
    return false;
  }

  // ROOM's lines in the conversation, in place of the shown room's (kept
  // in a list of their own, as the user left them). The live region is
  // busy meanwhile: the lines are not read out as they go in.
  function showRoom(room) {
    if (room !== shown) {
      const old = shown;
      old.scroll = atBottom() ? null : log.scrollTop;
      old.list = document.createElement("ol");
      quietly();
      old.list.append(...log.childNodes);
      log.append(...room.list.childNodes);
      room.list = log;
      shown = room;
      room.unread = 0;
      room.mentioned = false;
      clearUnread();
      if (room.scroll === null) {
        log.scrollTop = log.scrollHeight;
      } else {
        log.scrollTop = room.scroll;
      }
      showRoomItem(old);
      showMembers();
      const url = room === lobby ? location.pathname + location.search : room.name;
      window.history.replaceState(null, "", url);
    }
    showRoomItem(room);
    showHead();
    if (!roomList.contains(document.activeElement)) {
      rovingFocus(room.button); // Tab comes to the shown room
    }
    if (!room.loaded) {
      room.loaded = true;
      askLast(room, room.at, room.lead);
    } else {
      fill();
    }
  }

  function forgetRoom(room) {
    room.button.parentElement.remove();
    rooms.delete(room.name);
    showRoomItem(shown);
  }

  // A line that answers /join, /part or /topic; true if it was one.
  function roomAnswer(line) {
    let match;
    if ((match = CURRENT.exec(line))) {
      serverRoom = match[1];
      if (parting) {
        parting = false; // the room left was the current one: not a /join's answer
      } else {
        joining = Math.max(0, joining - 1);
      }
      const room = ensureRoom(serverRoom);
      if (joining === 0) {
        showRoom(room); // the last room asked for, not one on the way
      }
      return true;
    }
    if ((match = LEFT.exec(line))) {
      const room = rooms.get(match[1]);
      parting = match[1] === serverRoom;
      if (room !== undefined) {
        notice(line, "notice", room === shown ? lobby : shown);
        forgetRoom(room);
      }
      return true;
    }
    if ((match = TOPIC.exec(line) ?? NO_TOPIC.exec(line))) {
      const room = ensureRoom(match[1]);
      room.topic = match[2] ?? null;
      if (room === shown) {
        showHead();
      }
      if (topicAsked > 0) {
        topicAsked -= 1;
        notice(line, "notice");
      }
      return true;
    }
    if (joining > 0 && JOIN_ERRORS.some((error) => error.test(line))) {
      joining -= 1;
      notice(line, "error");
      return true;
    }
    return false;
  }

  // The list of rooms with the keyboard: one Tab stop (the shown room),
  // the arrow keys, Home and End between rooms, Enter to show one.
  roomList.addEventListener("keydown", (event) => {
    const buttons = [...roomList.querySelectorAll("button")];
    const at = buttons.indexOf(document.activeElement);
    const to = {
      ArrowDown: at + 1,
      ArrowUp: at - 1,
      Home: 0,
      End: buttons.length - 1,
    }[event.key];
    if (at < 0 || to === undefined) {
      return;
    }
    event.preventDefault();
    const next = buttons[Math.max(0, Math.min(buttons.length - 1, to))];
    rovingFocus(next);
    next.focus();
  });

  function rovingFocus(button) {
    for (const each of roomList.querySelectorAll("button")) {
      each.tabIndex = each === button ? 0 : -1;
    }
  }

  roomList.addEventListener("focusout", (event) => {
    if (!roomList.contains(event.relatedTarget)) {
      rovingFocus(shown.button); // Tab comes back to the shown room
    }
  });

  joinRoomForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const name = roomName(roomInput.value);
    if (name === null) {
      notice(`Nom de salon incorrect : « ${roomInput.value.trim()} » (${ROOM_RULE}).`, "error");
      roomInput.focus();
      return;
    }
    if (sendJoin(name)) {
      roomInput.value = "";
      closeRoomsPanel();
    }
  });

  partButton.addEventListener("click", () => {
    if (shown !== lobby && send(`/part ${shown.name}`)) {
      messageInput.focus();
    }
  });

  // A link to a room: http://host:8080/#salle. Its room is joined once
  // registered; a name that breaks the rule is said, never sent.
  function linkedRoom() {
    let text = location.hash.slice(1);
    try {
      text = decodeURIComponent(text);
    } catch {
      // not percent-encoded: as it is
    }
    if (text === "") {
      return null;
    }
    const name = roomName(text);
    if (name === null) {
      notice(`Le lien nomme un salon incorrect : « ${text} » (${ROOM_RULE}).`, "error");
    }
    return name;
  }

  window.addEventListener("hashchange", () => {
    const name = linkedRoom();
    if (name !== null && registered && name !== shown.name) {
      sendJoin(name);
    } else if (name !== null && !registered) {
      wanted = name;
    }
  });

  // The user list: the shown room's members

  function setMembers(room, names) {
    room.members = [];
    names.forEach((name) => addMember(room, name));
    if (room === shown) {
      showMembers();
    }
  }

  function addMember(room, name) {
    const key = name.toLowerCase();
    if (!room.members.some((each) => each.toLowerCase() === key)) {
      room.members.push(name);
      if (room === shown) {
        addUser(name);
      }
    }
  }

  function removeMember(room, name) {
    const key = name.toLowerCase();
    room.members = room.members.filter((each) => each.toLowerCase() !== key);
    if (room === shown) {
      removeUser(name);
    }
  }

  function showMembers() {
    users.replaceChildren();
    shown.members.forEach(addUser);
    count.textContent = String(users.children.length);
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

  // A line in ROOM's conversation: shown, or counted unread in the list of
  // rooms (the lines said, not the arrivals and departures).
  function entry(line, room = shown) {
    const item = makeEntry(line);
    if (room !== shown) {
      room.list.append(item);
      if (line.kind === "public" || line.kind.includes("topic")) {
        room.unread += 1;
        room.mentioned ||= calls(line);
        showRoomItem(room);
        if (document.hidden) {
          titleCount += 1;
          showTitle();
        }
      }
      return;
    }
    const wasAtBottom = atBottom();
    endQuiet();
    log.append(item);
    if (wasAtBottom && !document.hidden) {
      item.scrollIntoView({ block: "end" });
    } else if (!line.kind.includes("own")) {
      markUnread();
    }
  }

  function makeEntry({ time, kind, from, text }) {
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
    return item;
  }

  function notice(text, kind, room = shown) {
    entry({ time: new Date().toTimeString().slice(0, 8), kind, text }, room);
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

  // Desktop notifications: a live line that mentions the user's nickname,
  // or a private line, while the tab is hidden. The permission is asked
  // only when the user clicks the button for it (never on loading), which
  // shows while the browser has not been told yes or no.

  const notes = []; // the notifications shown, closed once the tab is seen

  function calls(line) {
    if (!registered || nick === null || line.from === undefined) {
      return false;
    }
    if (line.from.toLowerCase() === nick.toLowerCase()) {
      return false;
    }
    return line.kind === "private" || (line.kind === "public" && mentions(line.text, nick));
  }

  function notifying() {
    return "Notification" in window && Notification.permission === "granted";
  }

  function showAlertsButton() {
    alertsButton.hidden = !(
      registered &&
      "Notification" in window &&
      Notification.permission === "default"
    );
  }

  alertsButton.addEventListener("click", () => {
    Promise.resolve(Notification.requestPermission())
      .catch(() => "denied")
      .then(showAlertsButton);
  });

  function notify({ kind, from, text, room }) {
    if (!document.hidden || !notifying()) {
      return;
    }
    // a mention in a room says which (a private line has none)
    const where = room === undefined ? "" : ` dans ${room}`;
    const title =
      kind === "private" ? `message privé de ${from}` : `${from} vous mentionne${where}`;
    // One notification per sender at a time: its newest line replaces it.
    const options = {
      body: text,
      tag: `chat-${from}`,
      renotify: true,
      lang: "fr",
      icon: "icon-192.png",
    };
    try {
      const note = new Notification(title, options);
      note.addEventListener("click", () => {
        window.focus();
        note.close();
      });
      notes.push(note);
    } catch {
      // Chrome on a phone: only the service worker may show one
      navigator.serviceWorker?.ready
        .then((worker) => worker.showNotification(title, options))
        .catch(() => {});
    }
  }

  function closeNotes() {
    for (const note of notes.splice(0)) {
      note.close();
    }
  }

  // Unread lines: the tab hidden, or the conversation scrolled up

  function markUnread() {
    unreadCount += 1;
    titleCount += 1;
    unread.textContent = `nouveaux messages (${unreadCount})`;
    unread.hidden = false;
    showTitle();
  }

  function clearUnread() {
    unreadCount = 0;
    titleCount = 0;
    unread.hidden = true;
    showTitle();
  }

  function showTitle() {
    document.title = titleCount > 0 ? `(${titleCount}) chat` : "chat";
  }

  unread.addEventListener("click", () => {
    log.lastElementChild?.scrollIntoView({ block: "end" });
    clearUnread();
    messageInput.focus();
  });
  // The conversation at its bottom before it got shorter (the message
  // field grows with the lines typed or pasted, a phone's keyboard opens)
  // stays there: at its bottom for the height it had.
  let logHeight = log.clientHeight;
  new ResizeObserver(() => {
    const wasAtBottom = log.scrollHeight - log.scrollTop - logHeight < 40;
    logHeight = log.clientHeight;
    if (wasAtBottom) {
      log.scrollTop = log.scrollHeight;
    }
  }).observe(log);
  log.addEventListener("scroll", () => {
    if (atBottom() && !document.hidden) {
      clearUnread();
    }
    if (log.scrollTop < 40) {
      askOlder(); // the conversation scrolled to its top
    }
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) {
      closeNotes();
      if (atBottom()) {
        clearUnread();
      }
    }
  });

  if (window.matchMedia("(max-width: 40rem)").matches) {
    people.open = false;
    roomsPanel.open = false;
  }
  showRoomItem(lobby);
  rovingFocus(lobby.button);
  showHead();
  wanted = linkedRoom();
  connect();

  // Installable: the service worker (sw.js) keeps the page's files for
  // when the server cannot be reached. Browsers have one only in a secure
  // context (https, or localhost).
  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("sw.js").catch(() => {});
  }
})();
