#!/usr/bin/env python
import os
import sys

HELP = {"help", "-h", "--help"}


def asks_for_help(argv: list[str]) -> bool:
    """``manage.py``, ``manage.py help ...`` or ``manage.py <command> --help``: nothing runs but the help text."""
    words = argv[1 : argv.index("--")] if "--" in argv else argv[1:]
    return not words or words[0] in HELP or any(word in ("-h", "--help") for word in words)


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gridtoken.settings")
    if asks_for_help(sys.argv):
        # Help needs the settings loaded but serves nothing, so the development defaults do (a production
        # start without DEBUG=true still refuses a missing SECRET_KEY and SOLANA_KEYPAIR_PATH).
        os.environ.setdefault("DEBUG", "true")
    from config import ConfigError

    try:
        from django.core.management import execute_from_command_line

        execute_from_command_line(sys.argv)
    except ConfigError as exc:
        sys.stderr.write(f"configuration error: {exc}\n")
        sys.exit(2)


if __name__ == "__main__":
    main()
