"""payments-svc: payment orchestration over gRPC and HTTP."""
