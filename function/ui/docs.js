// Swagger UI over the served model's OpenAPI document. "Try it out" sends the key entered on
// the prediction page (this tab's sessionStorage) as X-API-Key, or the one given to Authorize.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
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
