"""The pure domain: no SQL, no HTTP, no clock reads. Time is always passed in."""
