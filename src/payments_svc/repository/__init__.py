"""SQL for each table, over a connection the service layer owns (so several
repositories can share one transaction)."""
