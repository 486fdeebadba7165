"""HTTP JSON shim over the same service methods as gRPC (aiohttp)."""
