from django.apps import AppConfig


class LocalnetConfig(AppConfig):
    """The local chain: no models, an app only so that ``python manage.py localnet`` is found."""

    name = "localnet"
