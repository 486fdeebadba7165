"""gRPC adapter: payments.PaymentsService, standard health and reflection."""
