// /docs: Swagger UI over /openapi.json. Its files come from this host (the swagger-ui-bundle-v2
// package, under /docs/ui/) and this start is a file, not an inline script: the CSP allows neither
// a CDN nor inline code. Authorize takes an API token; "Try it out" then sends it.
window.SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
});
