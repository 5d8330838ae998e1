"""Love Packages: package kinds, schools and their students (allocation builds on these)."""
