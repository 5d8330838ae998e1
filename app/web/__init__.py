"""The web pages: the public transparency page and the merchant dashboard, server-rendered."""
