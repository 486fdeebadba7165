"""Database access: engine, tables and migrations."""

# The MySQL-family servers whose DDL differs (their NO PAD key collations); here, not in
# migrate.py, so that the CLI can offer them without importing database code.
MYSQL_SERVERS = ("mariadb", "mysql")
