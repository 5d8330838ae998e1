"""Donations: the merchant's rule, the donation of each order, its reversals and its stages."""
