"""Widgets of `llmsm watch`'s app."""
