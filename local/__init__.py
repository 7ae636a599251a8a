"""The local mirror: `make serve` (no Docker) and, with Docker, the Compose stack."""
