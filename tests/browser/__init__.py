"""Browser tests of the console (real headless Chromium)."""
