// radmesh development FHIR R4 server: node:http wiring around Medplum's FhirRouter and an
// in-memory versioned store. Development and test use only — see README.md.
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { badRequest, getStatus, isOk, normalizeOperationOutcome, serverError } from '@medplum/core';
import { buildCapabilityStatement, isKnownResourceType, loadDefinitions } from './lib/definitions.mjs';
import { createRouter } from './lib/routes.mjs';
import { attachSearch } from './lib/search.mjs';
import { VersionedStore, unknownType } from './lib/store.mjs';
import { SubscriptionManager } from './lib/subscriptions.mjs';

const HOST = process.env.RADMESH_FHIR_HOST ?? '127.0.0.1';
const PORT = parseInt(process.env.RADMESH_FHIR_PORT ?? '8080', 10);
const MAX_BODY_BYTES = parseInt(process.env.RADMESH_FHIR_MAX_BODY_MB ?? '100', 10) * 1024 * 1024;
const LOG_REQUESTS = process.env.RADMESH_FHIR_LOG_REQUESTS !== '0';
const VERSION = JSON.parse(readFileSync(new URL('./package.json', import.meta.url), 'utf8')).version;
const FHIR_JSON = 'application/fhir+json;charset=utf-8';

const log = (msg) => process.stdout.write(`${new Date().toISOString()} ${msg}\n`);

// ---- start-up ------------------------------------------------------------------------------------
const t0 = Date.now();
const { trimmed, valueSets } = loadDefinitions();
log(
  `definitions loaded in ${Date.now() - t0} ms (${trimmed} search parameter expressions trimmed to their resource type, ` +
    `${valueSets} enumerable value sets for required bindings)`
);

const store = new VersionedStore();
attachSearch(store);
new SubscriptionManager(store, { log });
const router = createRouter();
let capabilityStatement;

// ---- request handling ----------------------------------------------------------------------------

class HttpError extends Error {
  constructor(status, outcome) {
    super(outcome.issue?.[0]?.details?.text ?? `HTTP ${status}`);
    this.status = status;
    this.outcome = outcome;
  }
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(new HttpError(413, badRequest(`Request body larger than ${MAX_BODY_BYTES} bytes`)));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function parseBody(text, contentType) {
  const type = (contentType ?? '').split(';')[0].trim().toLowerCase();
  if (!text.trim()) return undefined;
  if (type === 'application/x-www-form-urlencoded') {
    const out = {};
    for (const [k, v] of new URLSearchParams(text)) {
      out[k] = k in out ? [].concat(out[k], v) : v;
    }
    return out;
  }
  if (type && !type.endsWith('json')) {
    throw new HttpError(415, badRequest(`Unsupported Content-Type "${type}"; use application/fhir+json or application/json`));
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new HttpError(400, badRequest(`Request body is not valid JSON: ${err.message}`));
  }
}

function send(res, status, body, headers = {}) {
  const payload = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, {
    ...(body === undefined ? {} : { 'Content-Type': FHIR_JSON }),
    'Content-Length': Buffer.byteLength(payload),
    ...headers,
  });
  res.end(res.req.method === 'HEAD' ? undefined : payload);
}

function resourceHeaders(resource, baseUrl, status, method) {
  const headers = {};
  if (!resource?.meta?.versionId || !resource.id || resource.resourceType === 'Bundle') return headers;
  const vid = resource.meta.versionId;
  headers.ETag = `W/"${vid}"`;
  if (resource.meta.lastUpdated) headers['Last-Modified'] = new Date(resource.meta.lastUpdated).toUTCString();
  const location = `${baseUrl}/${resource.resourceType}/${resource.id}/_history/${vid}`;
  if (status === 201) headers.Location = location;
  if (status === 201 || method === 'PUT' || method === 'POST') headers['Content-Location'] = location;
  return headers;
}

async function handle(req, res, url) {
  const baseUrl = `http://${req.headers.host ?? `${HOST}:${PORT}`}/fhir`;
  if (url.pathname !== '/fhir' && !url.pathname.startsWith('/fhir/')) {
    throw new HttpError(404, { ...unknownType('').outcome, issue: [{ severity: 'error', code: 'not-found', details: { text: 'Not found; the FHIR base is /fhir' } }] });
  }
  const segments = url.pathname.slice('/fhir'.length).split('/').filter(Boolean).map(decodeURIComponent);
  const method = req.method === 'HEAD' ? 'GET' : req.method;

  if (segments.length === 1 && segments[0] === 'metadata' && method === 'GET') {
    capabilityStatement ??= buildCapabilityStatement(baseUrl, VERSION);
    return send(res, 200, capabilityStatement);
  }
  const first = segments[0];
  if (first && !first.startsWith('$') && !first.startsWith('_') && !isKnownResourceType(first)) {
    throw new HttpError(404, unknownType(first).outcome);
  }

  const hasBody = method === 'POST' || method === 'PUT' || method === 'PATCH';
  const body = hasBody ? parseBody(await readBody(req), req.headers['content-type']) : undefined;
  const fhirReq = {
    method,
    url: segments.map(encodeURIComponent).join('/') + url.search,
    pathname: '',
    params: {},
    query: {},
    body,
    headers: req.headers,
    config: { baseUrl },
  };
  const run = () => router.handleRequest(fhirReq, store);
  const [outcome, resource] = method === 'GET' ? await run() : await store.exclusive(run);
  const status = getStatus(outcome);
  if (!isOk(outcome)) return send(res, status, outcome);

  const headers = resourceHeaders(resource, baseUrl, status, method);
  const prefer = String(req.headers.prefer ?? '');
  if (/return=minimal/.test(prefer)) return send(res, status, undefined, headers);
  if (/return=OperationOutcome/i.test(prefer)) return send(res, status, outcome, headers);
  return send(res, status, resource ?? outcome, headers);
}

const server = http.createServer((req, res) => {
  const started = process.hrtime.bigint();
  let url;
  try {
    url = new URL(req.url, 'http://localhost');
  } catch {
    url = new URL('http://localhost/');
  }
  if (LOG_REQUESTS) {
    // one line per request; the path only (no query string, no bodies: they can hold patient data)
    res.on('finish', () => {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      log(`${req.method} ${url.pathname} ${res.statusCode} ${ms.toFixed(1)}ms`);
    });
  }
  handle(req, res, url).catch((err) => {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    if (err instanceof HttpError) {
      send(res, err.status, err.outcome);
      return;
    }
    const outcome = err?.outcome ? normalizeOperationOutcome(err) : undefined;
    if (outcome) {
      send(res, getStatus(outcome), outcome);
      return;
    }
    log(`internal error on ${req.method} ${url.pathname}: ${err?.stack ?? err}`);
    send(res, 500, serverError(err instanceof Error ? err : new Error(String(err))));
  });
});

server.requestTimeout = 0; // large transactions may take a while to upload
server.keepAliveTimeout = 65_000;

server.listen(PORT, HOST, () => {
  log(`radmesh dev FHIR server ${VERSION} listening on http://${HOST}:${PORT}/fhir (in-memory, development/test only)`);
});

process.on('uncaughtException', (err) => log(`uncaught exception (server keeps running): ${err?.stack ?? err}`));
process.on('unhandledRejection', (err) => log(`unhandled rejection (server keeps running): ${err?.stack ?? err}`));

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    log(`${signal} received, shutting down`);
    server.close(() => process.exit(0));
    server.closeAllConnections?.();
    setTimeout(() => process.exit(0), 2000).unref();
  });
}
