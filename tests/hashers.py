"""The tests' password hasher: Django's PBKDF2 at one round instead of 1,000,000 (0.3 s of CPU for every hash
and every check, several hundred seconds over the suite). The hashes it writes are ordinary
``pbkdf2_sha256$1$...`` strings, so the servers and workers a test starts, on the production hasher, still check
them (they read the round count from the hash). A server's successful login re-hashes such a password at its own
round count, which changes the user's row and ends the sessions made for that user before: a browser test's
``sign_in`` (tests/realtime/test_browser.py) reloads the user after it."""

from django.contrib.auth.hashers import PBKDF2PasswordHasher


class OneRoundPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    iterations = 1
