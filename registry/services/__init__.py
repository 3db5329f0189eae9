"""The services: every business rule, once. Each takes a session and a principal, checks permission
first, returns ``registry.domain`` shapes (never rows) and never commits; the caller owns the
transaction. Shared lookups are public functions in ``lookups`` and ``views``."""
