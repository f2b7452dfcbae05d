"""Fakes of remote control planes the tests cannot reach (one per system)."""
