"""Settlement: final donations billed on statements, charged through Stripe, pooled in the base currency."""
