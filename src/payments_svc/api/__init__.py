"""Transport adapters: gRPC (api.grpc) and the HTTP JSON shim (api.http)."""
