from django.apps import AppConfig


class ProtocolsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "protocols"

    def ready(self) -> None:
        from meters.services.dead_letters import Door, replayer_register
        from protocols.replay import bridge_replay, mqtt_replay

        replayer_register(Door.BRIDGE, bridge_replay)
        replayer_register(Door.MQTT, mqtt_replay)
