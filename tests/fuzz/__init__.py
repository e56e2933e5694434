"""Fuzz suites: radmesh's inbound HTTP endpoints and its service queues under thousands of
generated hostile inputs (hypothesis), against the real infrastructure (`make infra-up`)."""
