"""Background jobs: status callback dispatch, reconcile, expire pending. Each runs
one batch (`payments-svc reconcile`) or loops (`--worker`); any number of copies may
run against one database, because every job claims its rows with a lease."""
