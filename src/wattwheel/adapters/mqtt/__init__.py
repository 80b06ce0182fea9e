"""MQTT telemetry: documented JSON payload codec, batching ingester, buffering publisher."""
