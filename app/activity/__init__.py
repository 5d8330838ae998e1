"""The activity log: who did what with which key — every change made with an API key (through the API or the
console) and every key created or revoked. Append-only, enforced by the database."""
