"""Threat feeds: registry, fetch, parse, validate, merge and sync of blocklists into kernel sets."""
