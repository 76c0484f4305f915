"""Perception (感知预警): vectorised rule evaluation, the ingest pipeline, MQTT, SensorThings, the simulator."""
