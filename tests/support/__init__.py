"""Test helpers shipped with the project: real infrastructure, real processes, real events."""
