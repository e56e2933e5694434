"""subscriber: FHIR rest-hooks and PACS stable-study webhooks → the models that apply → `study.detected`."""
