"""factory_boy factories shared by every app's tests (names are stable: other suites import them).

- ``UserFactory``: a user with a fresh wallet and the password ``password``.
- ``MeterFactory``: an active meter of a new user, crediting the owner's wallet.
- ``ReadingFactory``: a pending reading of a meter, attributed like ingestion attributes it (the meter's
  owner and wallet); successive readings are 15 minutes apart, going back from now.
- ``api_key_for(...)``: issue a key through the service and get (row, plaintext).
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import factory
from django.utils import timezone
from solders.keypair import Keypair

from meters.models import ApiKey, Meter, MeterReading, User
from meters.services.api_keys import api_key_create

PASSWORD = "password"


def new_wallet() -> str:
    return str(Keypair().pubkey())


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda user: f"{user.username}@example.com")
    wallet_address = factory.LazyFunction(new_wallet)
    password = factory.django.Password(PASSWORD)


class MeterFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Meter

    serial = factory.Sequence(lambda n: f"MTR-{n:05d}")
    owner = factory.SubFactory(UserFactory)
    wallet_address = factory.LazyAttribute(lambda meter: meter.owner.wallet_address or new_wallet())
    status = Meter.Status.ACTIVE


class ReadingFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = MeterReading

    meter = factory.SubFactory(MeterFactory)
    user = factory.LazyAttribute(lambda reading: reading.meter.owner)
    wallet_address = factory.LazyAttribute(lambda reading: reading.meter.wallet_address)
    kwh_amount = Decimal("1.500000000")
    mintable_kwh = factory.LazyAttribute(lambda reading: max(reading.kwh_amount, Decimal(0)))
    reading_timestamp = factory.Sequence(
        lambda n: timezone.now().replace(microsecond=0) - timedelta(minutes=15 * ((n % 500) + 1))
    )
    status = MeterReading.Status.PENDING


def api_key_for(*, meter: Meter | None = None, owner: User | None = None, scope: str | None = None):
    """(ApiKey, plaintext): a device key for ``meter``, or a fleet key for ``owner``."""
    scope = scope or (ApiKey.Scope.DEVICE if meter is not None else ApiKey.Scope.FLEET)
    owner = owner or (meter.owner if meter is not None else UserFactory())
    return api_key_create(owner=owner, scope=scope, meter=meter if scope == ApiKey.Scope.DEVICE else None)
