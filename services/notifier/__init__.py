"""notifier: `results.posted` → Communication, CommunicationRequest and consult ServiceRequest for
critical findings, to the ordering provider → `alert.raised`."""
