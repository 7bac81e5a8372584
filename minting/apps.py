from django.apps import AppConfig


class MintingConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "minting"
