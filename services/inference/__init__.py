"""inference: `study.fetched` → volume in HU → Open Inference Protocol v2 → `inference.completed`."""
