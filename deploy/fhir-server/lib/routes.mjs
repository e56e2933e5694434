// Medplum's FhirRouter with the handlers whose upstream behaviour differs from HAPI replaced:
// create (POST never overwrites; If-None-Exist), update (201 on create-by-update, If-Match),
// search (validation, paging links, includes) and batch/transaction (atomic, see transactions.mjs).
import {
  allOk,
  badRequest,
  created,
  parseSearchRequest,
  singularize,
} from '@medplum/core';
import { FhirRouter } from '@medplum/fhir-router';
import { searchHandler } from './search.mjs';
import { bundleHandler } from './transactions.mjs';

/** Parses If-Match: W/"3", "3" or 3 -> "3". */
export function parseIfMatch(value) {
  const raw = singularize(value);
  if (raw === undefined || raw === null || raw === '') return undefined;
  const quoted = /"([^"]*)"/.exec(raw);
  return quoted ? quoted[1] : String(raw).replace(/^W\//, '').trim();
}

/** A 400 outcome when the body is not a resource of the URL's type, else null. */
function bodyProblem(resource, resourceType) {
  if (!resource || typeof resource !== 'object' || Array.isArray(resource)) {
    return badRequest('Request body must be a FHIR resource');
  }
  if (resource.resourceType !== resourceType) {
    return badRequest(`Incorrect resource type: expected ${resourceType}, found ${resource.resourceType ?? '<none>'}`);
  }
  return null;
}

async function createHandler(req, store, _router, options) {
  const { resourceType } = req.params;
  store.checkType(resourceType);
  const resource = req.body;
  const invalid = bodyProblem(resource, resourceType);
  if (invalid) return [invalid];
  const batch = Boolean(options?.batch);
  if (!batch) delete resource.id; // POST always assigns a new id (HAPI); never overwrite
  const ifNoneExist = singularize(req.headers?.['if-none-exist']);
  if (ifNoneExist) {
    const query = String(ifNoneExist).replace(/^.*\?/, '');
    const result = await store.conditionalCreate(resource, parseSearchRequest(`${resourceType}?${query}`), {
      assignedId: batch,
    });
    return [result.outcome, result.resource];
  }
  return [created, await store.createResource(resource, { assignedId: batch })];
}

async function updateHandler(req, store) {
  const { resourceType, id } = req.params;
  store.checkType(resourceType);
  const resource = req.body;
  const invalid = bodyProblem(resource, resourceType);
  if (invalid) return [invalid];
  if (!resource.id) {
    return [badRequest('Can not update resource, resource body must contain an ID element for update (PUT) operation')];
  }
  if (resource.id !== id) {
    return [badRequest(`Resource body ID "${resource.id}" does not match URL ID "${id}"`)];
  }
  const existed = store.exists(resourceType, id);
  const result = await store.updateResource(resource, { ifMatch: parseIfMatch(req.headers?.['if-match']) });
  return [existed ? allOk : created, result];
}

async function systemSearchHandler() {
  return [badRequest('System-level search is not supported by the development FHIR server; search a resource type')];
}

function replaceRoute(router, method, path, handler) {
  const segments = path.split('/').filter(Boolean);
  const route = router.router.routes.find(
    (r) =>
      r.method === method &&
      r.path.length === segments.length &&
      r.path.every((seg, i) => (seg.param ? ':' + seg.value : seg.value) === segments[i])
  );
  if (!route) throw new Error(`route not found: ${method} ${path}`);
  route.handler = handler;
}

export function createRouter() {
  const router = new FhirRouter();
  replaceRoute(router, 'POST', '', bundleHandler);
  replaceRoute(router, 'GET', '', systemSearchHandler);
  replaceRoute(router, 'POST', ':resourceType', createHandler);
  replaceRoute(router, 'PUT', ':resourceType/:id', updateHandler);
  replaceRoute(router, 'GET', ':resourceType', searchHandler);
  replaceRoute(router, 'POST', ':resourceType/_search', searchHandler);
  return router;
}
