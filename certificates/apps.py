from django.apps import AppConfig


class CertificatesConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "certificates"
    verbose_name = "Energy attribute certificates"

    def ready(self) -> None:
        # The minting pipeline settles certificate batches through this hook (its one extension point).
        from certificates.services.settling import settle_operations
        from minting.services.settlement import register_settle_hook

        register_settle_hook(settle_operations)
