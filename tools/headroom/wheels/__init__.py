"""The wheels (make build, index, publish, inspect, verify): takes the applied checkouts; gives dist/: a reproducible
wheel per upstream with its SBOM, the static PEP 503 index, uploads, and a wheel's provenance read and re-checked."""
