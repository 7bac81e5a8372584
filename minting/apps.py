from django.apps import AppConfig


class MintingConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "minting"

    def ready(self) -> None:
        from meters.hooks import on_readings_stored
        from meters.services.rollups import register_fold
        from minting.triggers import mint_soon

        # meters never imports minting: a stored or released reading reaches the pipeline through this hook.
        on_readings_stored(mint_soon)
        # The mint batches' rollup deltas (migration 0006) fold with the readings' (the beat task, rollups_fold).
        register_fold("minting_batch_rollup_fold")
