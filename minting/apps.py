from django.apps import AppConfig


class MintingConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "minting"

    def ready(self) -> None:
        from meters.services.rollups import register_fold

        # The mint batches' rollup deltas (migration 0006) fold with the readings' (the beat task, rollups_fold).
        register_fold("minting_batch_rollup_fold")
