"""verification: `results.posted` → a FHIR Task per report; the review API (accept → `final` +
Provenance of the verifier, reject → `cancelled` with the reason) → `finding.verified` /
`finding.rejected`."""
