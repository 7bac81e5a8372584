"""``python -m localnet``: the ``manage.py localnet`` command, same options and output, without loading the
project's Django apps. The chain uses none of them, and their imports (the apps' hooks reach the minting
pipeline, the admin, the archive) are most of ``manage.py``'s start-up: ~1.5 of its ~1.7 s of CPU."""

import sys

from localnet.management.commands.localnet import Command

if __name__ == "__main__":
    Command().run_from_argv([sys.argv[0], "localnet", *sys.argv[1:]])
