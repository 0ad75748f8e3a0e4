"""Helpers shared by the test suites: fake servers and the like, never imported by product code."""
