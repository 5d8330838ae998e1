/* The field app's script. Every press becomes an event with its event_id and occurred_at fixed at that moment,
   kept in this phone's IndexedDB queue (photo included) and sent in order when the network is there. The service
   is idempotent by event_id, so sending again after a lost answer changes nothing. A refusal (409, 422, …) is
   shown with the service's reason and kept until dismissed; nothing queued is dropped silently. */
"use strict";

(function () {
  const DB_NAME = "g4g-partner";
  const STORE = "queue";
  const PAGES = "g4g-partner-pages-v1";
  const csrf = document.body.dataset.csrf || "";

  // ---- the queue, in IndexedDB (survives reloads and restarts) ----

  function openDb() {
    return new Promise((resolve, reject) => {
      const request = indexedDB.open(DB_NAME, 1);
      request.onupgradeneeded = () => request.result.createObjectStore(STORE, { keyPath: "seq", autoIncrement: true });
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
  }

  async function withStore(mode, work) {
    const db = await openDb();
    return new Promise((resolve, reject) => {
      const tx = db.transaction(STORE, mode);
      const result = work(tx.objectStore(STORE));
      tx.oncomplete = () => resolve(result && "result" in result ? result.result : undefined);
      tx.onerror = () => reject(tx.error);
    });
  }

  const queued = () => withStore("readonly", (store) => store.getAll());
  const enqueue = (item) => withStore("readwrite", (store) => store.add(item));
  const save = (item) => withStore("readwrite", (store) => store.put(item));
  const forget = (seq) => withStore("readwrite", (store) => store.delete(seq));

  function newEvent(shipmentId, status, extra) {
    return {
      shipment_id: shipmentId,
      state: "waiting",
      body: Object.assign(
        { event_id: crypto.randomUUID(), status: status, occurred_at: new Date().toISOString() },
        extra || {},
      ),
    };
  }

  // ---- sending, in order ----

  let sending = false;

  async function problemOf(response) {
    try {
      const problem = await response.json();
      return problem.detail || problem.title || String(response.status);
    } catch (unreadable) {
      return String(response.status);
    }
  }

  function post(url, body, contentType) {
    return fetch(url, {
      method: "POST",
      body: body,
      credentials: "same-origin",
      headers: { "Content-Type": contentType, "X-CSRF-Token": csrf },
    });
  }

  // "sent", "refused", "signin" or "later" (no network, or the service is not answering well).
  async function send(item) {
    const base = "/partner/api/shipments/" + encodeURIComponent(item.shipment_id);
    const body = JSON.parse(JSON.stringify(item.body));
    try {
      if (item.photo && !item.evidence_id) {
        const stored = await post(base + "/evidence", item.photo, item.photo.type || "application/octet-stream");
        if (stored.status === 401) return "signin";
        if (stored.status >= 400 && stored.status < 500) {
          item.problem = await problemOf(stored);
          return "refused";
        }
        if (!stored.ok) return "later";
        item.evidence_id = (await stored.json()).evidence_id;
        await save(item);
      }
      if (item.evidence_id) body.proof.evidence = { evidence_id: item.evidence_id };
      const answer = await post(base + "/events", JSON.stringify(body), "application/json");
      if (answer.ok) return "sent";
      if (answer.status === 401) return "signin";
      if (answer.status >= 400 && answer.status < 500 && answer.status !== 429) {
        item.problem = await problemOf(answer);
        return "refused";
      }
      return "later";
    } catch (offline) {
      return "later";
    }
  }

  async function flush() {
    if (sending || !navigator.onLine) return;
    sending = true;
    let sent = 0;
    let signIn = false;
    try {
      const blocked = new Set();
      for (const item of await queued()) {
        // A refused event holds back the later ones of its shipment until it is dismissed: they followed it.
        if (item.state === "refused" || blocked.has(item.shipment_id)) {
          blocked.add(item.shipment_id);
          continue;
        }
        const outcome = await send(item);
        if (outcome === "sent") {
          await forget(item.seq);
          sent += 1;
        } else if (outcome === "refused") {
          item.state = "refused";
          await save(item);
          blocked.add(item.shipment_id);
        } else {
          signIn = outcome === "signin";
          break;
        }
      }
    } finally {
      sending = false;
    }
    await render(signIn);
    if (sent > 0 && (await queued()).length === 0 && navigator.onLine) {
      location.reload(); // the service's history and status, now that it has everything
    }
  }

  // ---- what the page shows ----

  const names = () => {
    const shipment = document.getElementById("shipment");
    return shipment ? JSON.parse(shipment.dataset.names) : {};
  };

  async function render(signIn) {
    const items = await queued();
    const section = document.getElementById("queue");
    const list = document.getElementById("queue-items");
    if (!section || !list) return;
    section.hidden = items.length === 0;
    const note = document.getElementById("queue-note");
    note.hidden = !signIn;
    note.textContent = section.dataset.signIn;
    list.replaceChildren();
    const labels = names();
    for (const item of items) {
      const li = document.createElement("li");
      li.className = item.state;
      li.dataset.eventId = item.body.event_id;
      const what = labels[item.body.status] || item.body.status;
      const when = new Date(item.body.occurred_at).toLocaleString(document.documentElement.lang || undefined);
      const state = item.state === "refused" ? section.dataset.refused : section.dataset.waiting;
      li.textContent = what + " · " + when + " · " + state + (item.problem ? ": " + item.problem : "");
      if (item.state === "refused") {
        const dismiss = document.createElement("button");
        dismiss.type = "button";
        dismiss.className = "dismiss";
        dismiss.textContent = section.dataset.dismiss;
        dismiss.addEventListener("click", async () => {
          await forget(item.seq);
          await render(false);
          flush();
        });
        li.appendChild(dismiss);
      }
      list.appendChild(li);
    }
    await showShipment(items);
  }

  // The status as it will be once what waits on this phone is sent: the buttons follow it, offline too.
  async function showShipment(items) {
    const shipment = document.getElementById("shipment");
    if (!shipment) return;
    const machine = JSON.parse(shipment.dataset.machine);
    let status = shipment.dataset.status;
    let pending = false;
    for (const item of items) {
      if (item.shipment_id !== shipment.dataset.id || item.state !== "waiting") continue;
      if ((machine[status] || []).includes(item.body.status)) {
        status = item.body.status;
        pending = true;
      }
    }
    const label = document.getElementById("status");
    label.textContent = names()[status] || status;
    label.className = "status status-" + status;
    document.getElementById("pending-note").hidden = !pending;
    const allowed = machine[status] || [];
    let shown = 0;
    for (const button of shipment.querySelectorAll("button.next")) {
      button.hidden = !allowed.includes(button.dataset.next);
      if (!button.hidden) shown += 1;
    }
    document.getElementById("no-actions").hidden = shown > 0;
    shipment.dataset.effective = status;
  }

  function showNetwork() {
    const badge = document.getElementById("network");
    if (!badge) return;
    badge.textContent = navigator.onLine ? badge.dataset.online : badge.dataset.offline;
    badge.classList.toggle("offline", !navigator.onLine);
  }

  // ---- the shipment page's buttons and forms ----

  function position() {
    const gps = document.getElementById("gps");
    gps.textContent = gps.dataset.waiting;
    delete gps.dataset.lat;
    delete gps.dataset.lon;
    if (!navigator.geolocation) {
      gps.textContent = gps.dataset.none;
      return;
    }
    navigator.geolocation.getCurrentPosition(
      (found) => {
        gps.dataset.lat = String(found.coords.latitude);
        gps.dataset.lon = String(found.coords.longitude);
        gps.textContent = gps.dataset.found + ": " + found.coords.latitude.toFixed(5) + ", " +
          found.coords.longitude.toFixed(5) + " (±" + Math.round(found.coords.accuracy) + " m)";
      },
      () => { gps.textContent = gps.dataset.none; },
      { enableHighAccuracy: true, timeout: 20000, maximumAge: 60000 },
    );
  }

  function wireShipment() {
    const shipment = document.getElementById("shipment");
    if (!shipment) return;
    const id = shipment.dataset.id;
    const delivered = document.getElementById("delivered-form");
    const receipt = document.getElementById("receipt-form");
    const actions = document.getElementById("actions");

    function closeForms() {
      delivered.hidden = true;
      receipt.hidden = true;
      actions.hidden = false;
    }

    async function record(status, extra, photo) {
      const item = newEvent(id, status, extra);
      if (photo) item.photo = photo;
      await enqueue(item);
      closeForms();
      await render(false);
      flush();
    }

    for (const button of shipment.querySelectorAll("button.next")) {
      button.addEventListener("click", () => {
        const status = button.dataset.next;
        if (status === "delivered") {
          actions.hidden = true;
          delivered.hidden = false;
          position();
        } else if (status === "receipt_confirmed") {
          actions.hidden = true;
          receipt.hidden = false;
        } else {
          record(status); // the press is the moment: occurred_at is now
        }
      });
    }
    for (const cancel of shipment.querySelectorAll("button.cancel")) cancel.addEventListener("click", closeForms);

    const photo = document.getElementById("photo");
    const preview = document.getElementById("photo-preview");
    photo.addEventListener("change", () => {
      if (preview.src) URL.revokeObjectURL(preview.src);
      const file = photo.files[0];
      preview.hidden = !file;
      if (file) preview.src = URL.createObjectURL(file);
    });

    delivered.addEventListener("submit", (event) => {
      event.preventDefault();
      const file = photo.files[0];
      if (!file) return;
      const gps = document.getElementById("gps");
      const proof = {
        receiver_name: delivered.receiver_name.value.trim(),
        receiver_role: delivered.receiver_role.value.trim(),
        evidence: null, // the photo's evidence_id, once it is stored
      };
      if (gps.dataset.lat) proof.gps = { lat: Number(gps.dataset.lat), lon: Number(gps.dataset.lon) };
      // A Blob copy: IndexedDB keeps it, the file input's File may not survive a reload on every browser.
      record("delivered", { proof: proof }, new Blob([file], { type: file.type }));
      delivered.reset();
      preview.hidden = true;
    });

    for (const box of receipt.querySelectorAll("fieldset.box")) {
      const reason = box.querySelector("label.reason");
      const text = reason.querySelector("textarea");
      for (const radio of box.querySelectorAll("input[type=radio]")) {
        radio.addEventListener("change", () => {
          const written = radio.value !== "accepted";
          reason.hidden = !written;
          text.required = written;
        });
      }
    }
    receipt.addEventListener("submit", (event) => {
      event.preventDefault();
      const packages = [];
      for (const box of receipt.querySelectorAll("fieldset.box")) {
        const outcome = box.querySelector("input[type=radio]:checked").value;
        const entry = { package_id: box.dataset.package, outcome: outcome };
        if (outcome !== "accepted") {
          const reason = box.querySelector("textarea").value.trim();
          if (!reason) {
            box.querySelector("textarea").setCustomValidity(receipt.dataset.reasonNeeded);
            box.querySelector("textarea").reportValidity();
            return;
          }
          entry.reason = reason;
        }
        packages.push(entry);
      }
      record("receipt_confirmed", { packages: packages });
    });
    receipt.addEventListener("input", (event) => {
      if (event.target.tagName === "TEXTAREA") event.target.setCustomValidity("");
    });
  }

  // ---- the list: open shipments are fetched once, so the service worker keeps them for offline ----

  function prefetchOpenShipments() {
    if (!navigator.onLine || !navigator.serviceWorker || !navigator.serviceWorker.controller) return;
    for (const link of document.querySelectorAll("a[data-prefetch]")) {
      fetch(link.href, { credentials: "same-origin" }).catch(() => {});
    }
  }

  function wireSignOut() {
    const form = document.getElementById("sign-out");
    if (!form) return;
    form.addEventListener("submit", () => {
      if (window.caches) caches.delete(PAGES); // the teachers' contacts leave the phone with the session
    });
  }

  window.addEventListener("online", () => { showNetwork(); flush(); });
  window.addEventListener("offline", showNetwork);
  document.addEventListener("DOMContentLoaded", async () => {
    showNetwork();
    wireShipment();
    wireSignOut();
    await render(false);
    if (navigator.serviceWorker) {
      try {
        await navigator.serviceWorker.register("/partner/sw.js", { scope: "/partner" });
        await navigator.serviceWorker.ready;
      } catch (unsupported) {
        // The app still works online without it.
      }
    }
    prefetchOpenShipments();
    flush();
    setInterval(flush, 20000);
  });
})();
