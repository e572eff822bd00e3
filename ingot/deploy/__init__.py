"""Serving ingot beyond one process: engine replicas on Ray Serve behind a prefix-aware router."""
