// In-memory, versioned FHIR resource store (HAPI-like versioning) implementing Medplum's
// FhirRepository interface so the upstream router and batch processor can drive it.
//
// Differences from upstream MemoryRepository:
//  - meta.versionId is 1, 2, 3 ... per resource; DELETE writes a tombstone version (read -> 410);
//  - resources are validated against the R4 StructureDefinitions (400) and unknown types are 404;
//  - create never overwrites: a new id is assigned unless the batch processor pre-assigned one;
//  - history is newest first and never mutates the stored list;
//  - transactions: begin/commit/rollback with an undo journal; events are only published on commit.
import {
  OperationOutcomeError,
  badRequest,
  deepClone,
  generateId,
  gone,
  notFound,
  preconditionFailed,
  validateResource,
} from '@medplum/core';
import { FhirRepository } from '@medplum/fhir-router';
import { applyPatch } from 'rfc6902';
import { validateRequiredBindings } from './bindings.mjs';
import { isKnownResourceType } from './definitions.mjs';

const ID_PATTERN = /^[A-Za-z0-9\-.]{1,64}$/;

/** @param {string} type */
export function unknownType(type) {
  return new OperationOutcomeError({
    resourceType: 'OperationOutcome',
    id: 'not-found',
    issue: [{ severity: 'error', code: 'not-found', details: { text: `Unknown resource type "${type}"` } }],
  });
}

function goneError(type, id, versionId) {
  return new OperationOutcomeError({
    ...gone,
    issue: [
      {
        severity: 'error',
        code: 'deleted',
        details: { text: `Resource ${type}/${id} was deleted (version ${versionId})` },
      },
    ],
  });
}

/** Content equality ignoring meta.versionId / meta.lastUpdated (HAPI skips no-op updates). */
function sameContent(a, b) {
  const strip = (r) => {
    const copy = { ...r, meta: { ...(r.meta ?? {}) } };
    delete copy.meta.versionId;
    delete copy.meta.lastUpdated;
    if (Object.keys(copy.meta).length === 0) delete copy.meta;
    return JSON.stringify(copy);
  };
  return strip(a) === strip(b);
}

export class VersionedStore extends FhirRepository {
  constructor() {
    super();
    /** @type {Map<string, Map<string, {versions: Array<{versionId: string, lastUpdated: string, resource: object|null}>}>>} */
    this.records = new Map();
    /** hooks called with the resources written, after commit (or immediately outside a transaction) */
    this.writeListeners = [];
    /** hooks that may adjust/validate a resource before it is stored: (resource, isCreate) => void */
    this.beforeWriteHooks = [];
    this.tx = undefined;
    this.lock = Promise.resolve();
  }

  // ---- concurrency -------------------------------------------------------------------------

  /** Runs `fn` with exclusive write access (writes and transactions are serialised). */
  exclusive(fn) {
    const run = this.lock.then(fn, fn);
    this.lock = run.then(
      () => undefined,
      () => undefined
    );
    return run;
  }

  // ---- transactions ------------------------------------------------------------------------

  beginTransaction() {
    if (this.tx) throw new Error('nested transactions are not supported');
    this.tx = { journal: new Map(), events: [] };
  }

  commit() {
    const tx = this.tx;
    this.tx = undefined;
    if (tx) this.publish(tx.events);
  }

  rollback() {
    const tx = this.tx;
    this.tx = undefined;
    if (!tx) return;
    for (const [key, prevLength] of tx.journal) {
      const [type, id] = key.split('/');
      const byId = this.records.get(type);
      if (!byId) continue;
      if (prevLength === 0) byId.delete(id);
      else byId.get(id).versions.length = prevLength;
    }
  }

  publish(events) {
    if (!events.length) return;
    for (const listener of this.writeListeners) {
      try {
        listener(events);
      } catch (err) {
        console.error('write listener failed:', err);
      }
    }
  }

  // ---- low-level access --------------------------------------------------------------------

  record(type, id) {
    return this.records.get(type)?.get(id);
  }

  /** @returns {object|undefined} current (not deleted) stored version; do not mutate */
  current(type, id) {
    const rec = this.record(type, id);
    return rec?.versions[rec.versions.length - 1].resource ?? undefined;
  }

  /** Iterates the current stored versions of a type (shared objects: do not mutate). */
  *currentOfType(type) {
    const byId = this.records.get(type);
    if (!byId) return;
    for (const rec of byId.values()) {
      const res = rec.versions[rec.versions.length - 1].resource;
      if (res) yield res;
    }
  }

  countOfType(type) {
    return this.records.get(type)?.size ?? 0;
  }

  exists(type, id) {
    return Boolean(this.current(type, id));
  }

  /** Appends a version (resource or null for a delete); journals it inside a transaction. */
  appendVersion(type, id, resource, method) {
    let byId = this.records.get(type);
    if (!byId) {
      byId = new Map();
      this.records.set(type, byId);
    }
    let rec = byId.get(id);
    const key = `${type}/${id}`;
    if (this.tx && !this.tx.journal.has(key)) this.tx.journal.set(key, rec ? rec.versions.length : 0);
    if (!rec) {
      rec = { versions: [] };
      byId.set(id, rec);
    }
    const versionId = String(rec.versions.length + 1);
    const lastUpdated = new Date().toISOString();
    let stored = null;
    if (resource) {
      // resourceType, id, meta first (as HAPI serialises), then the rest of the content
      const { resourceType, id: _id, meta, ...rest } = resource;
      stored = { resourceType, id, meta: { ...(meta ?? {}), versionId, lastUpdated }, ...rest };
    }
    rec.versions.push({ versionId, lastUpdated, resource: stored, method });
    if (stored) {
      const event = { method, resource: stored };
      if (this.tx) this.tx.events.push(event);
      else this.publish([event]);
    }
    return stored;
  }

  checkType(type) {
    if (!isKnownResourceType(type)) throw unknownType(type);
  }

  prepare(resource, isCreate) {
    if (!resource || typeof resource !== 'object' || Array.isArray(resource)) {
      throw new OperationOutcomeError(badRequest('Request body must be a FHIR resource (JSON object)'));
    }
    this.checkType(resource.resourceType);
    const result = JSON.parse(JSON.stringify(resource));
    if (result.meta) {
      delete result.meta.versionId;
      delete result.meta.lastUpdated;
    }
    for (const hook of this.beforeWriteHooks) hook(result, isCreate);
    validateResource(result);
    validateRequiredBindings(result);
    return result;
  }

  // ---- FhirRepository ----------------------------------------------------------------------

  setMode() {}

  generateId() {
    return generateId();
  }

  /**
   * Creates a resource. A client-supplied id is ignored (POST always assigns a new id) unless
   * `options.assignedId` is set, which the batch processor does after assigning the id itself.
   */
  async createResource(resource, options) {
    const result = this.prepare(resource, true);
    if (!(options?.assignedId && result.id) || this.record(result.resourceType, result.id)) {
      result.id = this.generateId();
    }
    return deepClone(this.appendVersion(result.resourceType, result.id, result, 'POST'));
  }

  /** Update (or create-by-update with a client id). No-op updates keep the current version. */
  async updateResource(resource, options) {
    if (!resource?.id) throw new OperationOutcomeError(badRequest('Resource must contain an id to be updated'));
    if (!ID_PATTERN.test(resource.id)) throw new OperationOutcomeError(badRequest(`Invalid resource id "${resource.id}"`));
    this.checkType(resource.resourceType);
    const rec = this.record(resource.resourceType, resource.id);
    const latest = rec?.versions[rec.versions.length - 1];
    if (options?.ifMatch !== undefined) {
      if (!latest) throw new OperationOutcomeError(notFound);
      if (latest.versionId !== options.ifMatch) {
        throw new OperationOutcomeError({
          ...preconditionFailed,
          issue: [
            {
              severity: 'error',
              code: 'conflict',
              details: {
                text: `If-Match version ${options.ifMatch} does not match current version ${latest.versionId} of ${resource.resourceType}/${resource.id}`,
              },
            },
          ],
        });
      }
    }
    const result = this.prepare(resource, !latest?.resource);
    if (latest?.resource && sameContent(latest.resource, result)) {
      return deepClone(latest.resource);
    }
    return deepClone(this.appendVersion(result.resourceType, result.id, result, 'PUT'));
  }

  async patchResource(resourceType, id, patch) {
    const resource = await this.readResource(resourceType, id);
    const errors = applyPatch(resource, patch).filter(Boolean);
    if (errors.length) throw new OperationOutcomeError(badRequest(errors.map((e) => e.message).join('\n')));
    return this.updateResource(resource);
  }

  async deleteResource(resourceType, id) {
    this.checkType(resourceType);
    const rec = this.record(resourceType, id);
    if (!rec) throw new OperationOutcomeError(notFound);
    if (!rec.versions[rec.versions.length - 1].resource) return; // already deleted: idempotent
    this.appendVersion(resourceType, id, null, 'DELETE');
  }

  async readResource(resourceType, id) {
    this.checkType(resourceType);
    const rec = this.record(resourceType, id);
    if (!rec) throw new OperationOutcomeError(notFound);
    const latest = rec.versions[rec.versions.length - 1];
    if (!latest.resource) throw goneError(resourceType, id, latest.versionId);
    return deepClone(latest.resource);
  }

  async readReference(reference) {
    const parts = reference.reference?.split('/');
    if (parts?.length !== 2) throw new OperationOutcomeError(badRequest('Invalid reference'));
    return this.readResource(parts[0], parts[1]);
  }

  async readReferences(references) {
    return Promise.all(references.map((r) => this.readReference(r).catch((e) => e)));
  }

  async readVersion(resourceType, id, versionId) {
    this.checkType(resourceType);
    const rec = this.record(resourceType, id);
    if (!rec) throw new OperationOutcomeError(notFound);
    const version = rec.versions.find((v) => v.versionId === versionId);
    if (!version) throw new OperationOutcomeError(notFound);
    if (!version.resource) throw goneError(resourceType, id, versionId);
    return deepClone(version.resource);
  }

  /** History bundle, newest version first (deletes appear as DELETE entries without resource). */
  async readHistory(resourceType, id, options) {
    this.checkType(resourceType);
    const rec = this.record(resourceType, id);
    if (!rec) throw new OperationOutcomeError(notFound);
    const offset = options?.offset ?? 0;
    const limit = options?.limit ?? rec.versions.length;
    const entry = [...rec.versions]
      .reverse()
      .slice(offset, offset + limit)
      .map((v) => ({
        ...(v.resource ? { resource: deepClone(v.resource) } : {}),
        request: { method: v.method, url: v.method === 'POST' ? resourceType : `${resourceType}/${id}` },
        response: { status: v.resource ? (v.versionId === '1' ? '201 Created' : '200 OK') : '204 No Content', etag: `W/"${v.versionId}"`, lastModified: v.lastUpdated },
      }));
    return { resourceType: 'Bundle', type: 'history', total: rec.versions.length, entry };
  }

  // search / searchByReference are attached by search.mjs (attachSearch) to keep this file small.

  withTransaction(callback) {
    return callback(undefined);
  }
}
