from django.apps import AppConfig


class MetersConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "meters"

    def ready(self) -> None:
        from meters.services.dead_letters import Door, replayer_register
        from meters.services.replay import rest_batch_replay

        replayer_register(Door.REST_BATCH, rest_batch_replay)
