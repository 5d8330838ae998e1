"""The double-entry ledger: every movement of money, balanced, immutable, naming its cause."""
