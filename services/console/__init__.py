"""The owner's console: the web application for the shop's people (DESIGN.md §2, docs/console.md)."""
