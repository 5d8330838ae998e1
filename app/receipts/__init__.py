"""Buyers' receipt links: one order's donation followed to the classroom, with no account and no student."""
