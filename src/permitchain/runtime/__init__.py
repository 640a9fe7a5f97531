"""The runtime shared by all services: stream consumers, audit, logs, metrics, heartbeat."""
