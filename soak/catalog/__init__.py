"""Fault catalog (YAML data in fault_catalog/), its schema and loader, the
matcher, signatures for unknown failures, and the run classifier."""
