// The billing page: the merchant adds its card with Stripe.js. Our server makes a SetupIntent on the merchant's
// own Stripe customer, the browser confirms it with the card details (which go to Stripe only), and our server
// then reads the result from Stripe and keeps the card for the merchant's statements.
(function () {
  "use strict";
  var form = document.getElementById("card-form");
  if (!form || typeof Stripe === "undefined") {
    return;
  }
  var status = document.getElementById("card-status");
  var button = form.querySelector("button[type=submit]");
  var stripe = Stripe(form.dataset.publishableKey);
  var card = stripe.elements().create("card");
  card.mount("#card-element");

  function say(text, kind) {
    status.textContent = text;
    status.className = kind || "";
  }

  async function post(url) {
    var response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRF-Token": form.dataset.csrf },
    });
    var body = await response.json().catch(function () { return {}; });
    if (!response.ok) {
      throw new Error(body.detail || body.title || String(response.status));
    }
    return body;
  }

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    button.disabled = true;
    say(form.dataset.msgSaving);
    try {
      var setup = await post(form.dataset.setupUrl);
      var result = await stripe.confirmCardSetup(setup.client_secret, { payment_method: { card: card } });
      if (result.error) {
        throw new Error(result.error.message || "");
      }
      await post(form.dataset.setupUrl + "/" + encodeURIComponent(setup.setup_intent_id) + "/complete");
      say(form.dataset.msgSaved, "success");
      window.location.reload();
    } catch (error) {
      say(form.dataset.msgFailed + " " + ((error && error.message) || ""), "error");
      button.disabled = false;
    }
  });
})();
