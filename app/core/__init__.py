"""Shared machinery: settings, database, errors, auth, ids, pagination, logging, metrics."""
