"""fetcher: `study.detected` → QIDO-RS + streaming WADO-RS into the blob store → `study.fetched`."""
