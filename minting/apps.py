from django.apps import AppConfig


class MintingConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "minting"

    def ready(self) -> None:
        # meters never imports minting: a stored or released reading reaches the pipeline through this hook.
        from meters.hooks import on_readings_stored
        from minting.triggers import mint_soon

        on_readings_stored(mint_soon)
