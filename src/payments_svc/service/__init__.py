"""The use cases. gRPC and HTTP are thin adapters over PaymentService."""
