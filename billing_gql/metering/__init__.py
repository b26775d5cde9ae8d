"""Metering: recording usage events (the ingest path) and the entitlement thresholds they cross."""
