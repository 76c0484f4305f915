"""HTTP entry points: the REST API (and later Open311 and SensorThings)."""
