/* The field app's service worker (scope /partner): pages already opened stay readable without a network.
   Pages: network first, the last copy when offline. Static files: cached. What the page's script sends
   (/partner/api/) is never cached nor answered from here: the page keeps it queued until it is sent. */
"use strict";

const PAGES = "g4g-partner-pages-v1";
const STATIC = "g4g-partner-static-v1";
const SHELL = [
  "/static/site.css",
  "/static/partner/partner.css",
  "/static/partner/app.js",
  "/static/favicon.svg",
  "/partner/manifest.webmanifest",
];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(STATIC).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys()
      .then((names) => Promise.all(names.filter((n) => n !== PAGES && n !== STATIC).map((n) => caches.delete(n))))
      .then(() => self.clients.claim()),
  );
});

async function page(request) {
  const cache = await caches.open(PAGES);
  try {
    const response = await fetch(request);
    if (response.headers.get("X-G4G-Signed-Out")) {
      // The phone's session is over (signed out elsewhere, expired, or its key revoked): the pages kept for
      // offline use name schools and teachers, so they go too. The queue (IndexedDB) stays, to send after sign-in.
      await caches.delete(PAGES);
    } else if (response.ok && !response.redirected) {
      await cache.put(request, response.clone());
    }
    return response;
  } catch (offline) {
    const kept = (await cache.match(request, { ignoreVary: true })) || (await cache.match("/partner", { ignoreVary: true }));
    if (kept) return kept;
    throw offline;
  }
}

async function staticFile(request) {
  const cache = await caches.open(STATIC);
  const kept = await cache.match(request);
  if (kept) {
    fetch(request).then((fresh) => fresh.ok && cache.put(request, fresh)).catch(() => {});
    return kept;
  }
  const response = await fetch(request);
  if (response.ok) await cache.put(request, response.clone());
  return response;
}

self.addEventListener("fetch", (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (request.method !== "GET" || url.origin !== self.location.origin) return;
  if (url.pathname.startsWith("/partner/api/")) return;
  if (url.pathname === "/partner" || url.pathname.startsWith("/partner/shipments/")) {
    event.respondWith(page(request));
  } else if (url.pathname.startsWith("/static/") || url.pathname === "/partner/manifest.webmanifest") {
    event.respondWith(staticFile(request));
  }
});
