"""End-to-end suite: `bash e2e/run.sh` (or `make e2e`). Not collected by `make test`."""
