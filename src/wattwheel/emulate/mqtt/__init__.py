"""The emulated site's telemetry over a real MQTT broker."""

from wattwheel.emulate.mqtt.publisher import (
    MqttEmulatorHandle,
    site_samples,
    start_mqtt_emulator,
)

__all__ = ["MqttEmulatorHandle", "site_samples", "start_mqtt_emulator"]
