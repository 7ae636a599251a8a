"""The HTTP service: the functions-framework entry, routing, protocols, auth, telemetry."""
