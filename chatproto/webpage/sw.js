// The page's service worker: it keeps the page's own files, so that the
// page, installed on a phone's home screen, opens even when the server
// cannot be reached (and says it is reconnecting). Nothing else: a service
// worker never sees the WebSocket, and this one lets every request that is
// not for one of FILES (another path, another origin, not a GET) go to the
// network untouched.
//
// Online, each file comes from the server first, the copy kept being only
// what the last load got: an updated page reaches users on their next
// load, never a stale one. VERSION is put in by the server (chatproto/web.py):
// a hash of the page's files, so that a new page is a new worker, which
// fetches the new files, takes over at once and deletes the older copy.
"use strict";

const VERSION = "__PAGE_VERSION__";
const PREFIX = "chatproto-page-";
const CACHE = PREFIX + VERSION;
const FILES = [
  "./",
  "app.js",
  "style.css",
  "favicon.svg",
  "manifest.webmanifest",
  "icon-192.png",
  "icon-512.png",
];
const KEPT = new Set(FILES.map((name) => new URL(name, self.location).href));

self.addEventListener("install", (event) => {
  event.waitUntil(
    caches
      .open(CACHE)
      .then((cache) => cache.addAll(FILES.map((name) => new Request(name, { cache: "no-cache" }))))
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((names) =>
        Promise.all(
          names
            .filter((name) => name.startsWith(PREFIX) && name !== CACHE)
            .map((name) => caches.delete(name)),
        ),
      )
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const request = event.request;
  const url = new URL(request.url);
  url.search = ""; // the page with a query is the page
  url.hash = "";
  if (request.method !== "GET" || !KEPT.has(url.href)) {
    return; // not one of the page's files: as if there were no worker
  }
  event.respondWith(fromServer(request, url.href));
});

// The server's answer (kept for next time), or, when it cannot be reached,
// the copy.
async function fromServer(request, key) {
  const cache = await caches.open(CACHE);
  try {
    const response = await fetch(request);
    if (response.ok) {
      await cache.put(key, response.clone());
    }
    return response;
  } catch (error) {
    const kept = await cache.match(key);
    if (kept === undefined) {
      throw error;
    }
    return kept;
  }
}

// A notification the page asked this worker to show (a phone's browser
// refuses the page's own): a click brings the chat forward.
self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  event.waitUntil(
    self.clients
      .matchAll({ type: "window" })
      .then((windows) => (windows.length > 0 ? windows[0].focus() : self.clients.openWindow("./"))),
  );
});
