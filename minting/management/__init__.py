from django.core.management.base import CommandError


def command_error(error: Exception) -> CommandError:
    """A command's failure, a chain error's stable code first (``signer_token_missing: the PKCS#11 token ...``),
    as the pause reasons and the runbook name it."""
    code = getattr(error, "code", None)
    return CommandError(f"{code}: {error}" if code else str(error))
