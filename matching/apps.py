from django.apps import AppConfig


class MatchingConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "matching"
    verbose_name = "Hourly matching"

    def ready(self) -> None:
        # A claimed bundle's public verification shows the consumer's hour it was matched to (its one hook).
        from certificates.selectors import register_verify_detail
        from matching.report import bundle_match

        register_verify_detail(bundle_match)
