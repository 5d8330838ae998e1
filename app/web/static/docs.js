// The API reference at /docs: Swagger UI (vendored under /static/vendor) over this service's own OpenAPI document.
// A file rather than an inline script, so the page keeps the same Content-Security-Policy as every other.
(function () {
  "use strict";
  var root = document.getElementById("swagger-ui");
  if (!root || typeof SwaggerUIBundle === "undefined") {
    return;
  }
  SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null, // no badge fetched from elsewhere
  });
})();
