import { API_DOC_VERSION, documentedRoutes } from './openapi.document';

const escapeHtml = (text: string): string =>
  text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

const AUTH_LABEL = {
  bearer: 'Bearer key',
  admin: 'Bearer admin key',
  basic: 'Basic (admin key)',
  none: 'none',
} as const;

/**
 * `/docs`: a self-contained HTML list of the routes in the OpenAPI document. No CDN and no
 * bundled viewer: the page must work on an air-gapped cluster, and the JSON beside it feeds
 * any OpenAPI tool.
 */
export function renderDocsPage(): string {
  const rows = documentedRoutes()
    .map(
      (r) =>
        `<tr><td><code>${r.method}</code></td><td><code>${escapeHtml(r.path)}</code></td>` +
        `<td>${escapeHtml(r.summary)}</td><td>${AUTH_LABEL[r.auth]}</td></tr>`,
    )
    .join('\n');
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>lorafleet API ${API_DOC_VERSION}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2rem; }
table { border-collapse: collapse; }
td, th { border-bottom: 1px solid #ddd; padding: 0.3rem 0.8rem; text-align: left; }
</style>
</head>
<body>
<h1>lorafleet API ${API_DOC_VERSION}</h1>
<p>OpenAI-compatible fine-tuning API. Machine-readable description: <a href="/docs/openapi.json">/docs/openapi.json</a> (OpenAPI 3.1).
Errors are <code>{"error": {"message", "type", "param", "code"}}</code>.</p>
<table>
<thead><tr><th>method</th><th>path</th><th>what</th><th>auth</th></tr></thead>
<tbody>
${rows}
</tbody>
</table>
</body>
</html>
`;
}
