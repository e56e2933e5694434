// R4 Subscriptions, channel.type rest-hook, delivered the way HAPI's
// SubscriptionDeliveringRestHookSubscriber does:
//   - channel.payload set   -> PUT {endpoint}/{Type}/{id} with the resource as body
//   - channel.payload empty -> POST {endpoint} with an empty body
//   - every channel.header "Name: value" is sent as an HTTP header
// Matching uses the search engine (criteria such as "ImagingStudy?status=available") against the
// version just written. The store publishes writes only after commit, so a rolled-back transaction
// fires nothing. Delivery runs after the write's response, is retried with backoff on failure,
// and never throws into the server.
import { OperationOutcomeError, badRequest, parseSearchRequest } from '@medplum/core';
import { matchesFilters, validateSearchRequest } from './search.mjs';

const DEFAULT_RETRY_DELAYS_MS = [500, 2000, 5000];
const DELIVERY_TIMEOUT_MS = 10_000;

/** Parses and validates Subscription.criteria; throws a 400 OperationOutcomeError if unusable. */
export function parseCriteria(criteria) {
  if (!criteria || typeof criteria !== 'string') {
    throw new OperationOutcomeError(badRequest('Subscription.criteria is required'));
  }
  let sr;
  try {
    sr = parseSearchRequest(criteria);
    validateSearchRequest(sr);
  } catch (err) {
    const text = err instanceof OperationOutcomeError ? err.message : String(err?.message ?? err);
    throw new OperationOutcomeError(badRequest(`Invalid Subscription.criteria "${criteria}": ${text}`, 'Subscription.criteria'));
  }
  return sr;
}

/** Parses channel.header entries ("Name: value") into a header object. */
export function parseHeaders(entries) {
  const headers = {};
  for (const line of entries ?? []) {
    const idx = String(line).indexOf(':');
    if (idx > 0) headers[line.slice(0, idx).trim()] = line.slice(idx + 1).trim();
  }
  return headers;
}

export class SubscriptionManager {
  /**
   * @param {import('./store.mjs').VersionedStore} store
   * @param {{ retryDelaysMs?: number[], log?: (msg: string) => void }} [options]
   */
  constructor(store, options = {}) {
    this.store = store;
    this.retryDelaysMs = options.retryDelaysMs ?? DEFAULT_RETRY_DELAYS_MS;
    this.log = options.log ?? ((msg) => console.log(msg));
    this.criteriaCache = new Map(); // "id/versionId" -> SearchRequest
    this.chains = new Map(); // subscription id -> promise (deliveries of one subscription stay in order)
    store.beforeWriteHooks.push((resource) => this.beforeWrite(resource));
    store.writeListeners.push((events) => this.onCommit(events));
  }

  /** Validates criteria and activates requested subscriptions (as HAPI does). */
  beforeWrite(resource) {
    if (resource.resourceType !== 'Subscription') return;
    parseCriteria(resource.criteria);
    if (resource.status === 'requested') resource.status = 'active';
  }

  /** Called after commit with the written versions (immutable stored objects). */
  onCommit(events) {
    const writes = events.filter((e) => e.resource && e.resource.resourceType !== 'Subscription');
    if (!writes.length) return;
    // defer so that matching and delivery happen after the write's response
    setImmediate(() => {
      try {
        this.dispatch(writes);
      } catch (err) {
        this.log(`subscription matching failed: ${err?.message ?? err}`);
      }
    });
  }

  activeSubscriptions() {
    const subs = [];
    for (const sub of this.store.currentOfType('Subscription')) {
      if (sub.status === 'active' && sub.channel?.type === 'rest-hook' && sub.channel?.endpoint) subs.push(sub);
    }
    return subs;
  }

  criteriaOf(sub) {
    const key = `${sub.id}/${sub.meta?.versionId}`;
    let sr = this.criteriaCache.get(key);
    if (!sr) {
      sr = parseCriteria(sub.criteria);
      this.criteriaCache.set(key, sr);
    }
    return sr;
  }

  dispatch(writes) {
    const subs = this.activeSubscriptions();
    if (!subs.length) return;
    for (const { resource } of writes) {
      for (const sub of subs) {
        let sr;
        try {
          sr = this.criteriaOf(sub);
        } catch {
          continue;
        }
        if (sr.resourceType === resource.resourceType && matchesFilters(resource, sr)) {
          this.enqueue(sub, resource);
        }
      }
    }
  }

  enqueue(sub, resource) {
    const previous = this.chains.get(sub.id) ?? Promise.resolve();
    const next = previous.then(() => this.deliver(sub, resource)).catch((err) => {
      this.log(`subscription ${sub.id}: delivery error ${err?.message ?? err}`);
    });
    this.chains.set(sub.id, next);
    next.then(() => {
      if (this.chains.get(sub.id) === next) this.chains.delete(sub.id);
    });
  }

  /** Still active? (stop retrying once a subscription is switched off or deleted) */
  stillActive(subId) {
    const current = this.store.current('Subscription', subId);
    return current?.status === 'active';
  }

  async deliver(sub, resource) {
    const { endpoint, payload, header } = sub.channel;
    const headers = parseHeaders(header);
    let url;
    let init;
    if (payload) {
      url = `${endpoint.replace(/\/+$/, '')}/${resource.resourceType}/${resource.id}`;
      const contentType = /json/i.test(payload) ? payload : 'application/fhir+json';
      init = { method: 'PUT', headers: { 'Content-Type': contentType, ...headers }, body: JSON.stringify(resource) };
    } else {
      url = endpoint;
      init = { method: 'POST', headers: { ...headers }, body: '' };
    }
    const target = `${init.method} ${url} (Subscription/${sub.id}, ${resource.resourceType}/${resource.id}/_history/${resource.meta?.versionId})`;
    for (let attempt = 0; attempt <= this.retryDelaysMs.length; attempt++) {
      if (attempt > 0) {
        await new Promise((r) => setTimeout(r, this.retryDelaysMs[attempt - 1]));
        if (!this.stillActive(sub.id)) {
          this.log(`subscription delivery abandoned (subscription no longer active): ${target}`);
          return;
        }
      }
      try {
        const res = await fetch(url, { ...init, signal: AbortSignal.timeout(DELIVERY_TIMEOUT_MS) });
        await res.arrayBuffer().catch(() => undefined);
        if (res.ok) {
          this.log(`subscription delivered: ${target} -> ${res.status}`);
          return;
        }
        this.log(`subscription delivery failed (attempt ${attempt + 1}): ${target} -> HTTP ${res.status}`);
      } catch (err) {
        this.log(`subscription delivery failed (attempt ${attempt + 1}): ${target} -> ${err?.cause?.code ?? err?.cause?.message ?? err?.message ?? err}`);
      }
    }
    this.log(`subscription delivery gave up after ${this.retryDelaysMs.length + 1} attempts: ${target}`);
  }
}
