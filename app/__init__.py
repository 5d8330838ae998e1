"""Goods for Good: checkout donations turned into Love Packages."""
