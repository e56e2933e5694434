"""mapper: `inference.completed` → Device, Observations, DiagnosticReport, Provenance in one FHIR
transaction of conditional creates (+ a TID 1500 DICOM SR stored to the PACS) → `results.posted`."""
