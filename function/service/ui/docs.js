// Swagger UI over the served model's OpenAPI document. "Try it out" sends the key entered on
// the prediction page (this tab's sessionStorage) as X-API-Key, or the one given to Authorize.
"use strict";

// Fields Swagger UI draws without a name a screen reader could announce: named as they appear.
const UNLABELLED = [
  ["textarea.body-param__text", "Request body"],
  ["select.examples-select-element", "Example request body"],
  ["select.content-type", "Media type"],
];

function labelFields(root) {
  for (const [selector, label] of UNLABELLED) {
    for (const field of root.querySelectorAll(`${selector}:not([aria-label])`)) {
      field.setAttribute("aria-label", label);
    }
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("swagger-ui");
  new MutationObserver(() => labelFields(root)).observe(root, { childList: true, subtree: true });
  const ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    deepLinking: false,
    tryItOutEnabled: true,
    // Its highlighter's inline styles would need style-src 'unsafe-inline'.
    syntaxHighlight: false,
    onComplete: () => {
      const key = sessionStorage.getItem("modelrun.apiKey");
      if (key) ui.preauthorizeApiKey("apiKeyHeader", key);
    },
  });
});
