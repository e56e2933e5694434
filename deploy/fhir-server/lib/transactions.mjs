// Batch and transaction Bundles.
//
// Upstream's processBatch does the per-entry work (ordering DELETE/POST/PUT/GET, urn:uuid identity
// assignment and reference rewriting, conditional create via request.ifNoneExist, If-Match).
// We always run it in *batch* mode (its transaction mode refuses bundles with more than a few
// conditional entries) and add atomicity ourselves: the store journals every write of the
// transaction, and if any entry fails the journal is rolled back and the whole request fails
// with that entry's OperationOutcome — nothing stored, no subscription fired.
import { OperationOutcomeError, allOk, badRequest } from '@medplum/core';
import { processBatch } from '@medplum/fhir-router';

function entryStatus(entry) {
  return parseInt(String(entry?.response?.status ?? '500'), 10);
}

const REASONS = { 200: 'OK', 201: 'Created', 204: 'No Content', 304: 'Not Modified' };

/** Makes response entries look like HAPI's: "201 Created", Location with _history, etag. */
function decorateEntry(entry) {
  const response = entry?.response;
  if (!response) return entry;
  const status = entryStatus(entry);
  const resource = entry.resource;
  if (resource?.meta?.versionId && resource.id) {
    response.location = `${resource.resourceType}/${resource.id}/_history/${resource.meta.versionId}`;
    response.etag = `W/"${resource.meta.versionId}"`;
    response.lastModified = resource.meta.lastUpdated;
  }
  if (REASONS[status]) {
    response.status = `${status} ${REASONS[status]}`;
    delete response.outcome; // keep success responses small (transactions can have thousands of entries)
  }
  return entry;
}

/** FhirRouter handler for POST / (batch or transaction Bundle). */
export async function bundleHandler(req, store, router) {
  const bundle = req.body;
  if (bundle?.resourceType !== 'Bundle') {
    return [badRequest('Expected a Bundle of type batch or transaction')];
  }
  if (bundle.type !== 'batch' && bundle.type !== 'transaction') {
    return [badRequest(`Unsupported Bundle.type "${bundle.type}" (expected batch or transaction)`)];
  }
  const batchReq = { ...req, config: { ...(req.config ?? {}), transactions: false } };
  const batchBundle = { ...bundle, type: 'batch' };

  if (bundle.type === 'batch') {
    const result = await processBatch(batchReq, store, router, batchBundle);
    result.type = 'batch-response';
    result.entry = (result.entry ?? []).map(decorateEntry);
    return [allOk, result];
  }

  store.beginTransaction();
  let result;
  try {
    result = await processBatch(batchReq, store, router, batchBundle);
    const entries = result.entry ?? [];
    for (let i = 0; i < entries.length; i++) {
      const status = entryStatus(entries[i]);
      if (!(status >= 200 && status < 300)) {
        const outcome = entries[i]?.response?.outcome ?? badRequest('Transaction entry failed');
        throw new OperationOutcomeError(annotate(outcome, i, bundle.entry?.[i]));
      }
    }
  } catch (err) {
    store.rollback();
    if (err instanceof OperationOutcomeError) {
      return [err.outcome];
    }
    throw err;
  }
  store.commit();
  result.type = 'transaction-response';
  result.entry = result.entry.map(decorateEntry);
  return [allOk, result];
}

/** Prefixes the failing entry's issues with its position so the client knows which one failed. */
function annotate(outcome, index, entry) {
  const where = `Transaction failed at Bundle.entry[${index}] (${entry?.request?.method ?? '?'} ${entry?.request?.url ?? '?'}); nothing was stored`;
  // issue[0] (and the outcome id) still determine the HTTP status: 400 invalid, 404 unknown type, 412 If-Match
  return {
    ...outcome,
    issue: [...(outcome.issue ?? []), { severity: 'information', code: 'informational', details: { text: where } }],
  };
}
