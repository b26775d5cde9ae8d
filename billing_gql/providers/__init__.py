"""Providers built into the core (only ``manual``; real providers are separate plugins)."""
