"""Dispatch engines: from a report's text to a category, a department and a level."""
