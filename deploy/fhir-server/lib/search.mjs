// FHIR search over the in-memory store: parameter validation (unknown -> 400, as HAPI),
// matching (Medplum's matcher for token/date/uri, HAPI-like string and reference matching here),
// multi-key _sort, _count/_offset paging with followable `next` links, _include and _revinclude.
import {
  DEFAULT_MAX_SEARCH_COUNT,
  DEFAULT_SEARCH_COUNT,
  Operator,
  OperationOutcomeError,
  allOk,
  badRequest,
  convertToSearchableReferences,
  deepClone,
  evalFhirPathTyped,
  matchesSearchRequest,
  parseFhirPath,
  parseSearchRequest,
  splitSearchOnComma,
  toTypedValue,
} from '@medplum/core';
import { SUPPORTED_SEARCH_PARAM_TYPES, getSearchParam, isKnownResourceType } from './definitions.mjs';
import { unknownType } from './store.mjs';

// ---- helpers ---------------------------------------------------------------------------------

const astCache = new Map();

/** Evaluates a SearchParameter's (trimmed) expression on a resource, with a parsed-AST cache. */
export function evalParam(param, resource) {
  let ast = astCache.get(param.expression);
  if (!ast) {
    ast = parseFhirPath(param.expression);
    astCache.set(param.expression, ast);
  }
  return evalFhirPathTyped(ast, [toTypedValue(resource)]);
}

function invalid(text) {
  return new OperationOutcomeError(badRequest(text));
}

const normalize = (s) =>
  String(s)
    .normalize('NFD')
    .replace(/[\u0300-\u036f]/g, '')
    .toLowerCase();

/** All string leaves of a value (a string, or e.g. a HumanName/Address object). */
function stringLeaves(value, out = []) {
  if (value === null || value === undefined) return out;
  if (typeof value === 'string') out.push(value);
  else if (Array.isArray(value)) value.forEach((v) => stringLeaves(v, out));
  else if (typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) if (k !== 'extension' && k !== 'period' && k !== 'use') stringLeaves(v, out);
  }
  return out;
}

/** "http://x/fhir/Patient/1/_history/2" -> "Patient/1" */
function normalizeReference(ref) {
  const withoutHistory = String(ref).replace(/\/_history\/[^/]+$/, '');
  const parts = withoutHistory.split('/').filter(Boolean);
  return parts.length >= 2 ? `${parts[parts.length - 2]}/${parts[parts.length - 1]}` : withoutHistory;
}

// ---- validation ------------------------------------------------------------------------------

const STRING_OPERATORS = new Set([Operator.EQUALS, Operator.EXACT, Operator.CONTAINS, Operator.MISSING, Operator.PRESENT]);
const REFERENCE_OPERATORS = new Set([Operator.EQUALS, Operator.MISSING, Operator.PRESENT, Operator.NOT, Operator.NOT_EQUALS]);

/**
 * Rejects what this server cannot evaluate faithfully, the way HAPI rejects unknown parameters
 * (HTTP 400 OperationOutcome) instead of silently returning nothing as upstream does.
 */
export function validateSearchRequest(sr) {
  const type = sr.resourceType;
  if (!isKnownResourceType(type)) throw unknownType(type);
  for (const filter of sr.filters ?? []) {
    if (filter.code === '_has' || filter.code.includes('.')) {
      throw invalid(`Chained parameters and _has are not supported by the development FHIR server: ${filter.code}`);
    }
    const param = getSearchParam(type, filter.code);
    if (!param) {
      throw invalid(`Unknown search parameter "${filter.code}" for resource type "${type}"`);
    }
    if (!SUPPORTED_SEARCH_PARAM_TYPES.has(param.type)) {
      throw invalid(`Search parameter "${filter.code}" of type ${param.type} is not supported by the development FHIR server`);
    }
    if (param.type === 'string' && !STRING_OPERATORS.has(filter.operator)) {
      throw invalid(`Modifier :${filter.operator} is not supported for string parameter "${filter.code}"`);
    }
    if (param.type === 'reference' && !REFERENCE_OPERATORS.has(filter.operator)) {
      throw invalid(`Modifier :${filter.operator} is not supported for reference parameter "${filter.code}"`);
    }
  }
  for (const rule of sr.sortRules ?? []) {
    if (!getSearchParam(type, rule.code)) throw invalid(`Unknown _sort parameter "${rule.code}" for resource type "${type}"`);
  }
  for (const target of [...(sr.include ?? []), ...(sr.revInclude ?? [])]) {
    if (!isKnownResourceType(target.resourceType)) throw unknownType(target.resourceType);
    const param = getSearchParam(target.resourceType, target.searchParam);
    if (param?.type !== 'reference') {
      throw invalid(`Invalid include "${target.resourceType}:${target.searchParam}": not a reference search parameter`);
    }
    if (target.targetType && !isKnownResourceType(target.targetType)) throw unknownType(target.targetType);
  }
  for (const target of sr.include ?? []) {
    if (target.resourceType !== type && target.modifier !== Operator.ITERATE) {
      throw invalid(`_include=${target.resourceType}:${target.searchParam} does not apply to ${type} (use :iterate)`);
    }
  }
  if (sr.count !== undefined && (!Number.isInteger(sr.count) || sr.count < 0)) throw invalid('_count must be a non-negative integer');
  if (sr.offset !== undefined && (!Number.isInteger(sr.offset) || sr.offset < 0)) throw invalid('_offset must be a non-negative integer');
}

// ---- matching --------------------------------------------------------------------------------

function matchString(resource, param, filter) {
  const leaves = [];
  for (const tv of evalParam(param, resource)) stringLeaves(tv.value, leaves);
  return splitSearchOnComma(filter.value).some((wanted) => {
    if (filter.operator === Operator.EXACT) return leaves.includes(wanted);
    const w = normalize(wanted);
    return leaves.some((leaf) =>
      filter.operator === Operator.CONTAINS ? normalize(leaf).includes(w) : normalize(leaf).startsWith(w)
    );
  });
}

function matchReference(resource, param, filter) {
  const refs = convertToSearchableReferences(evalParam(param, resource)).map(normalizeReference);
  const hit = splitSearchOnComma(filter.value).some((wanted) => {
    if (!wanted.includes('/')) return refs.some((r) => r === wanted || r.endsWith('/' + wanted));
    return refs.includes(normalizeReference(wanted));
  });
  const negated = filter.operator === Operator.NOT || filter.operator === Operator.NOT_EQUALS;
  return negated ? !hit : hit;
}

/** True if the resource satisfies every filter of the (validated) search request. */
export function matchesFilters(resource, sr) {
  if (resource.resourceType !== sr.resourceType) return false;
  const delegated = [];
  for (const filter of sr.filters ?? []) {
    const param = getSearchParam(sr.resourceType, filter.code);
    const presence = filter.operator === Operator.MISSING || filter.operator === Operator.PRESENT;
    if (param.type === 'string' && !presence) {
      if (!matchString(resource, param, filter)) return false;
    } else if (param.type === 'reference' && !presence) {
      if (!matchReference(resource, param, filter)) return false;
    } else {
      delegated.push(filter);
    }
  }
  return delegated.length === 0 || matchesSearchRequest(resource, { resourceType: sr.resourceType, filters: delegated });
}

// ---- sorting ---------------------------------------------------------------------------------

function sortKey(value) {
  if (value === null || value === undefined) return undefined;
  if (typeof value !== 'object') return value;
  if (value.start || value.end) return value.start ?? value.end; // Period
  if (value.family || value.given) return [value.family, ...(value.given ?? [])].filter(Boolean).join(' ');
  if (value.coding) return value.coding[0]?.code ?? value.text;
  if (value.value !== undefined) return value.value; // Identifier, Quantity
  if (value.code !== undefined) return value.code; // Coding
  if (value.reference !== undefined) return value.reference;
  return JSON.stringify(value);
}

function sortResources(resources, sr) {
  if (!sr.sortRules?.length) return resources;
  const rules = sr.sortRules.map((rule) => ({ rule, param: getSearchParam(sr.resourceType, rule.code) }));
  const keyed = resources.map((resource, index) => ({
    resource,
    index,
    keys: rules.map(({ param }) => sortKey(evalParam(param, resource)[0]?.value)),
  }));
  keyed.sort((a, b) => {
    for (let i = 0; i < rules.length; i++) {
      const ka = a.keys[i];
      const kb = b.keys[i];
      if (ka === kb) continue;
      if (ka === undefined) return 1; // missing values last
      if (kb === undefined) return -1;
      const cmp = ka < kb ? -1 : 1;
      return rules[i].rule.descending ? -cmp : cmp;
    }
    return a.index - b.index;
  });
  return keyed.map((k) => k.resource);
}

// ---- includes --------------------------------------------------------------------------------

function collectIncludes(store, sr, page) {
  const seen = new Set(page.map((r) => `${r.resourceType}/${r.id}`));
  const included = [];
  const add = (res) => {
    const key = `${res.resourceType}/${res.id}`;
    if (!seen.has(key)) {
      seen.add(key);
      included.push(res);
      return true;
    }
    return false;
  };
  // _include (with :iterate applied to newly included resources, bounded)
  let sources = page;
  for (let round = 0; round < 4 && sources.length && sr.include?.length; round++) {
    const added = [];
    for (const target of sr.include) {
      if (round > 0 && target.modifier !== Operator.ITERATE) continue;
      const param = getSearchParam(target.resourceType, target.searchParam);
      for (const source of sources) {
        if (source.resourceType !== target.resourceType) continue;
        for (const ref of convertToSearchableReferences(evalParam(param, source))) {
          const [type, id] = normalizeReference(ref).split('/');
          if (!id || (target.targetType && type !== target.targetType)) continue;
          const res = store.current(type, id);
          if (res && add(res)) added.push(res);
        }
      }
    }
    sources = added;
  }
  // _revinclude
  for (const target of sr.revInclude ?? []) {
    const param = getSearchParam(target.resourceType, target.searchParam);
    const wanted = new Set(page.map((r) => `${r.resourceType}/${r.id}`));
    for (const candidate of store.currentOfType(target.resourceType)) {
      const refs = convertToSearchableReferences(evalParam(param, candidate)).map(normalizeReference);
      if (refs.some((r) => wanted.has(r))) add(candidate);
    }
  }
  return included;
}

// ---- execution -------------------------------------------------------------------------------

/**
 * Runs a search. Returns stored objects (never mutate them).
 * @returns {{ total: number, page: object[], included: object[], offset: number, count: number }}
 */
export function executeSearch(store, sr) {
  validateSearchRequest(sr);
  const matches = [];
  for (const resource of store.currentOfType(sr.resourceType)) {
    if (matchesFilters(resource, sr)) matches.push(resource);
  }
  const sorted = sortResources(matches, sr);
  const offset = sr.offset ?? 0;
  const count = Math.min(sr.count ?? DEFAULT_SEARCH_COUNT, DEFAULT_MAX_SEARCH_COUNT);
  const page = sorted.slice(offset, offset + count);
  const included = collectIncludes(store, sr, page);
  return { total: matches.length, page, included, offset, count };
}

/** Installs `search` (used by upstream conditional create/update/delete and batch) on the store. */
export function attachSearch(store) {
  store.search = async (sr) => {
    const { total, page } = executeSearch(store, sr);
    return {
      resourceType: 'Bundle',
      type: 'searchset',
      total,
      entry: page.map((resource) => ({ resource: deepClone(resource) })),
    };
  };
  store.searchByReference = async () => {
    throw invalid('searchByReference is not supported by the development FHIR server');
  };
}

function queryEntries(query) {
  const entries = [];
  for (const [key, value] of Object.entries(query ?? {})) {
    for (const v of Array.isArray(value) ? value : [value ?? '']) entries.push([key, v]);
  }
  return entries;
}

function pageLink(baseUrl, type, entries, offset, count) {
  const params = new URLSearchParams(entries.filter(([k]) => k !== '_offset' && k !== '_count'));
  params.set('_count', String(count));
  if (offset > 0) params.set('_offset', String(offset));
  return `${baseUrl}/${type}?${params.toString()}`;
}

/** FhirRouter handler for GET /:type and POST /:type/_search. */
export async function searchHandler(req, repo) {
  const { resourceType } = req.params;
  const query = req.method === 'POST' ? { ...(req.query ?? {}), ...(req.body ?? {}) } : req.query;
  const sr = parseSearchRequest(resourceType, query);
  const { total, page, included, offset, count } = executeSearch(repo, sr);
  const baseUrl = req.config?.baseUrl ?? '';
  const entries = queryEntries(query);
  const link = [{ relation: 'self', url: `${baseUrl}/${resourceType}${entries.length ? '?' + new URLSearchParams(entries) : ''}` }];
  if (count > 0 && offset + count < total) {
    link.push({ relation: 'next', url: pageLink(baseUrl, resourceType, entries, offset + count, count) });
  }
  if (count > 0 && offset > 0) {
    link.push({ relation: 'previous', url: pageLink(baseUrl, resourceType, entries, Math.max(0, offset - count), count) });
  }
  const toEntry = (mode) => (resource) => ({
    fullUrl: `${baseUrl}/${resource.resourceType}/${resource.id}`,
    resource: deepClone(resource),
    search: { mode },
  });
  const bundle = {
    resourceType: 'Bundle',
    meta: { lastUpdated: new Date().toISOString() },
    type: 'searchset',
    total,
    link,
    entry: [...page.map(toEntry('match')), ...included.map(toEntry('include'))],
  };
  if (!bundle.entry.length) delete bundle.entry;
  return [allOk, bundle];
}
