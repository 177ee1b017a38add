"""Tests use the same local-broker helper as the demo."""

from leukedge.localbroker import Broker, find_mosquitto, free_port, mosquitto_available

__all__ = ["Broker", "find_mosquitto", "free_port", "mosquitto_available"]
