"""The logistics partners' field app (`/partner`): pages over the logistics and evidence services."""
